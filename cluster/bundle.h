// What a controller pushes to a server (cluster/): one version of the generated Caddyfile and
// the data-directory files that go with it, so that servers need no shared volume:
//
//   certificates/<issuer>/<name>/<name>.{crt,key,json}   ACME certificates (acme::Storage layout)
//   acme/challenge_tokens/...                            pending HTTP-01 / TLS-ALPN-01 answers
//
// A server writes the files into its own data directory (atomically, keys 0600), removes
// challenge answers the controller no longer has, then loads the Caddyfile; its ACME manager
// never orders (acme::Manager::Options::issue), it only serves what was pushed.
//
// Known shortcoming: the local CA (`pki/`, `tls internal` and `local_certs`) is not pushed, so
// each server issues internal certificates from its own root; clients that trust one server's
// root do not trust the others'. Public-CA (ACME) certificates are unaffected.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace hsp::cluster {

struct BundleFile {
  std::string path;  // relative to the data directory, under one of the pushed trees
  unsigned mode = 0644;
  std::string data;
  bool operator==(const BundleFile&) const = default;
};

struct Bundle {
  uint64_t version = 0;
  std::string controller;  // who made it (host name), for logs
  std::string caddyfile;
  std::vector<BundleFile> files;  // sorted by path
};

std::string bundle_to_json(const Bundle& b);
// Strict: every field typed, paths checked (relative, inside the pushed trees, no '.' or '..'
// components, no hidden names, components of at most 255 bytes), modes 0600 or 0644, each file
// at most 1 MiB, at most 30 000 files, JSON nested at most 8 deep. Errors name the field or the
// path.
Result<Bundle> bundle_from_json(std::string_view text);

// The pushed trees of `data_dir`: regular files of at most 1 MiB, hidden names (temporaries)
// skipped, sorted by path.
Result<std::vector<BundleFile>> collect_files(const std::string& data_dir);
// Writes what differs, then removes challenge answers not in `files`. Returns how many files
// were written or removed. A path that goes through a symbolic link inside the data directory
// is an error (nothing is written or removed through it). `cancel`, when set, stops between
// files (shutdown).
Result<size_t> apply_files(const std::string& data_dir, const std::vector<BundleFile>& files,
                           const std::atomic<bool>* cancel = nullptr);

// A digest of the Caddyfile and the files (SHA-256, hex): whether anything changed.
std::string bundle_digest(const Bundle& b);

// A server's last applied push, kept at <data>/cluster/server.json so that a restarted server
// serves it at once, before (or without) any controller.
struct ServerState {
  uint64_t version = 0;
  std::string controller;
  std::string caddyfile;
};
Result<bool> save_server_state(const std::string& data_dir, const ServerState& s);
// nullopt when none was saved; an Error when the file is damaged.
Result<std::optional<ServerState>> load_server_state(const std::string& data_dir);

// The controller's last version and digest, at <data>/cluster/controller.json: a restarted
// controller never goes back to a lower version.
struct ControllerState {
  uint64_t version = 0;
  std::string digest;
};
Result<bool> save_controller_state(const std::string& data_dir, const ControllerState& s);
Result<std::optional<ControllerState>> load_controller_state(const std::string& data_dir);

}  // namespace hsp::cluster
