// The open-addressing host table behind Snapshot::find_site (see host_table.h).
#include "engine/host_table.h"

#include <cstring>

namespace hsp::engine {

namespace {

inline uint64_t mix(uint64_t a, uint64_t b) {
  __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

// ASCII 'A'..'Z' -> 'a'..'z' in all 8 bytes at once; other bytes (incl. >= 0x80) unchanged.
inline uint64_t lower8(uint64_t x) {
  constexpr uint64_t k7f = 0x7f7f7f7f7f7f7f7full, k80 = 0x8080808080808080ull;
  uint64_t low7 = x & k7f;
  uint64_t ge_a = low7 + 0x3f3f3f3f3f3f3f3full;  // high bit set when byte >= 'A'
  uint64_t gt_z = low7 + 0x2525252525252525ull;  // high bit set when byte > 'Z'
  uint64_t upper = (ge_a ^ gt_z) & ~x & k80;
  return x | (upper >> 2);
}

constexpr uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull,
                   k2 = 0x8ebc6af09c88c6e3ull;

}  // namespace

// Multiply-mix over 8-byte words (in the spirit of wyhash): host names are short, so a few
// multiplications beat byte-at-a-time hashing, and the quality is plenty for a table kept at
// <= 50% load.
uint64_t lower_and_hash(const char* in, size_t n, char* out) {
  uint64_t h = k0 ^ (n * k1);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, in + i, 8);
    w = lower8(w);
    std::memcpy(out + i, &w, 8);
    h = mix(h ^ w, k1);
  }
  if (i < n) {
    uint64_t w = 0;
    std::memcpy(&w, in + i, n - i);
    w = lower8(w);
    std::memcpy(out + i, &w, 8);
    h = mix(h ^ w, k2);
  }
  return mix(h, k0) | 1;
}

// The same hash as lower_and_hash for a name that is already lower-case (lower8 is then the
// identity), without the copy.
uint64_t hash_host(std::string_view s) {
  const size_t n = s.size();
  uint64_t h = k0 ^ (n * k1);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = mix(h ^ w, k1);
  }
  if (i < n) {
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, n - i);
    h = mix(h ^ w, k2);
  }
  return mix(h, k0) | 1;
}

void HostTable::insert(std::string_view key, const Site* site) {
  pending_.push_back({std::string(key), site});
}

void HostTable::finish() {
  size_t cap = 16;
  while (cap < pending_.size() * 2) cap <<= 1;
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  arena_.clear();
  count_ = 0;
  for (const auto& p : pending_) {
    uint64_t h = hash_host(p.key);
    if (find(p.key, h) != nullptr) continue;  // first insert wins
    size_t i = h & mask_;
    while (slots_[i].site != nullptr) i = (i + 1) & mask_;
    Slot& s = slots_[i];
    s.hash = h;
    s.site = p.site;
    s.key_len = static_cast<uint32_t>(p.key.size());
    if (p.key.size() <= kInline) {
      std::memcpy(s.key, p.key.data(), p.key.size());
    } else {
      s.key_off = static_cast<uint32_t>(arena_.size());
      arena_ += p.key;
    }
    ++count_;
  }
  pending_.clear();
  pending_.shrink_to_fit();
}

const Site* HostTable::find(std::string_view key, uint64_t h) const {
  if (slots_.empty()) return nullptr;
  size_t i = h & mask_;
  while (true) {
    const Slot& s = slots_[i];
    if (s.site == nullptr) return nullptr;
    if (s.hash == h && s.key_len == key.size()) {
      const char* stored = key.size() <= kInline ? s.key : arena_.data() + s.key_off;
      if (std::memcmp(stored, key.data(), key.size()) == 0) return s.site;
    }
    i = (i + 1) & mask_;
  }
}

}  // namespace hsp::engine
