// Small helpers every ACME test binary file uses: the TLS tests' temporary directory and
// common_name() (one definition for both areas), whole-file reads and writes, and PEM text of
// keys and certificates made in the tests.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>
#include <string>

#include "../tls/tls_test_util.h"

namespace hsp::acme::testing {

using tls::testing::common_name;
using tls::testing::TempDir;

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// What `write` (a PEM_write_bio_* call on a memory BIO) produced, as a string.
template <typename Write>
std::string pem_text(Write write) {
  BIO* bio = BIO_new(BIO_s_mem());
  write(bio);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(len));
  BIO_free(bio);
  return pem;
}

// PKCS#8 PEM of a private key.
inline std::string key_pem(EVP_PKEY* key) {
  return pem_text([key](BIO* bio) {
    PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  });
}

inline std::string cert_pem(X509* cert) {
  return pem_text([cert](BIO* bio) { PEM_write_bio_X509(bio, cert); });
}

}  // namespace hsp::acme::testing
