#include "cluster/seal.h"

#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <memory>

#include "tls/certified_key.h"

namespace hsp::cluster {
namespace {

constexpr std::string_view kMagic = "HSP1";
constexpr size_t kNonce = 12, kTag = 16;
constexpr size_t kMinSecret = 16, kMaxSecretFile = 4096;

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

const unsigned char* bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

Result<PushKey> PushKey::from_file(const std::string& path) {
  auto text = tls::read_file_if_exists(path, kMaxSecretFile);
  if (!text) return Error{{path, 0, 0}, "push secret: " + text.errors().front().message};
  if (!*text) return Error{{path, 0, 0}, "push secret: the file does not exist"};
  auto key = from_secret(**text);
  if (!key) return Error{{path, 0, 0}, key.errors().front().message};
  return key;
}

Result<PushKey> PushKey::from_secret(std::string_view secret) {
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r' ||
                             secret.back() == ' ' || secret.back() == '\t')) {
    secret.remove_suffix(1);
  }
  if (secret.size() < kMinSecret) {
    return Error{{},
                 "push secret: " + std::to_string(secret.size()) +
                     " bytes; at least 16 are needed (e.g. openssl rand -hex 32)"};
  }
  PushKey k;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  size_t len = k.key_.size();
  const std::string_view salt = "hsp-gateway cluster", info = "push key v1";
  bool ok = ctx && EVP_PKEY_derive_init(ctx) > 0 &&
            EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) > 0 &&
            EVP_PKEY_CTX_set1_hkdf_salt(ctx, bytes(salt), static_cast<int>(salt.size())) > 0 &&
            EVP_PKEY_CTX_set1_hkdf_key(ctx, bytes(secret), static_cast<int>(secret.size())) > 0 &&
            EVP_PKEY_CTX_add1_hkdf_info(ctx, bytes(info), static_cast<int>(info.size())) > 0 &&
            EVP_PKEY_derive(ctx, k.key_.data(), &len) > 0 && len == k.key_.size();
  EVP_PKEY_CTX_free(ctx);
  if (!ok) return Error{{}, "push secret: key derivation failed: " + tls::openssl_error()};
  return k;
}

std::string PushKey::seal(std::string_view aad, std::string_view plain) const {
  std::string out(kMagic);
  out.resize(kMagic.size() + kNonce + plain.size() + kTag);
  auto* nonce = reinterpret_cast<unsigned char*>(out.data() + kMagic.size());
  auto* body = nonce + kNonce;
  // A failure here is the process's entropy source or OpenSSL itself failing: nothing a caller
  // could handle, and sending an unsealed body is never an option.
  if (RAND_bytes(nonce, kNonce) != 1) std::abort();
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int n = 0, fin = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, bytes(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), body, &n, bytes(plain), static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), body + n, &fin) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, body + plain.size()) != 1) {
    std::abort();
  }
  return out;
}

Result<std::string> PushKey::open(std::string_view aad, std::string_view sealed) const {
  if (sealed.size() < kMagic.size() + kNonce + kTag) {
    return Error{{}, "sealed body too short (" + std::to_string(sealed.size()) + " bytes)"};
  }
  if (sealed.substr(0, kMagic.size()) != kMagic) return Error{{}, "not a sealed push (magic)"};
  if (sealed.size() > size_t{1} << 30) return Error{{}, "sealed body too large"};
  const auto* nonce = bytes(sealed) + kMagic.size();
  const auto* body = nonce + kNonce;
  size_t body_len = sealed.size() - kMagic.size() - kNonce - kTag;
  std::string plain(body_len, '\0');
  auto* out = reinterpret_cast<unsigned char*>(plain.data());
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int n = 0, fin = 0;
  bool ok =
      ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), nonce) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &n, bytes(aad), static_cast<int>(aad.size())) == 1 &&
      EVP_DecryptUpdate(ctx.get(), out, &n, body, static_cast<int>(body_len)) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag,
                          const_cast<unsigned char*>(body + body_len)) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), out + n, &fin) == 1;
  if (!ok) return Error{{}, "authentication failed: wrong push secret or a tampered body"};
  return plain;
}

}  // namespace hsp::cluster
