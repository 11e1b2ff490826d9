// Authenticated encryption of what a controller pushes to its servers (cluster/): configs,
// certificates with their private keys, challenge answers. Both ends hold one shared secret (a
// Docker secret file); a push that was not sealed with it is refused, and one read off the
// controller network reveals nothing.
//
//   key    = HKDF-SHA256(secret, salt "hsp-gateway cluster", info "push key v1"), 32 bytes
//   sealed = "HSP1" || nonce (12 random bytes) || AES-256-GCM(key, nonce, aad, plain) || tag (16)
//
// The AAD binds the sealed body to what it is for (the request path), so a body cannot be
// replayed to another endpoint. Replays of a whole push are harmless: servers apply versions
// only forwards, and the same version twice changes nothing.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "util/error.h"

namespace hsp::cluster {

class PushKey {
 public:
  // The secret is the file's content without trailing white space; at least 16 bytes, so that a
  // placeholder or an empty file is an error naming the file rather than a guessable key.
  static Result<PushKey> from_file(const std::string& path);
  static Result<PushKey> from_secret(std::string_view secret);

  std::string seal(std::string_view aad, std::string_view plain) const;
  // The plain text, or an Error saying why the body is not ours (too short, wrong magic, wrong
  // key or tampered, which GCM cannot tell apart).
  Result<std::string> open(std::string_view aad, std::string_view sealed) const;

 private:
  std::array<uint8_t, 32> key_{};
};

}  // namespace hsp::cluster
