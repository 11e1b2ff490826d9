// Host name -> site lookup without allocation or locks: open addressing over 64-byte slots that
// hold the key inline (one cache line per probe for names up to 40 bytes; longer ones live in a
// side arena). Built once per snapshot, then read-only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hsp::engine {

class Site;

// Longest host name we look up (RFC 1035: 253 characters plus a trailing dot).
inline constexpr size_t kMaxHostLen = 255;

// Lower-cases ASCII letters of in[0..n) into out (8 bytes at a time) and returns the hash of
// the lower-cased name. out must have room for n bytes rounded up to a multiple of 8.
uint64_t lower_and_hash(const char* in, size_t n, char* out);
// Hash of an already lower-case name (same value lower_and_hash gives).
uint64_t hash_host(std::string_view lower_host);

class HostTable {
 public:
  // Keys must already be lower-case. A key inserted twice keeps its first value (sites earlier
  // in the server's list win, as routes earlier in Caddy's list do).
  void insert(std::string_view key, const Site* site);
  // Call once after the last insert.
  void finish();

  const Site* find(std::string_view lower_key) const {
    return find(lower_key, hash_host(lower_key));
  }
  const Site* find(std::string_view lower_key, uint64_t hash) const;
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }

 private:
  static constexpr size_t kInline = 40;
  struct alignas(64) Slot {
    uint64_t hash = 0;
    const Site* site = nullptr;  // nullptr: empty slot
    uint32_t key_len = 0;
    uint32_t key_off = 0;  // into arena_ when key_len > kInline
    char key[kInline] = {};
  };
  struct Pending {
    std::string key;
    const Site* site;
  };

  std::vector<Pending> pending_;
  std::vector<Slot> slots_;
  std::string arena_;
  uint64_t mask_ = 0;
  size_t count_ = 0;
};

}  // namespace hsp::engine
