#include "cluster/server.h"

#include <openssl/rand.h>

#include <nlohmann/json.hpp>

#include "cluster/controller.h"
#include "util/log.h"

namespace hsp::cluster {

using nlohmann::json;

namespace {

AdminResponse text(int status, const std::string& body) {
  return {status, "text/plain", body + "\n"};
}

}  // namespace

PushReceiver::PushReceiver(Options options, Apply apply)
    : options_(std::move(options)), apply_(std::move(apply)) {
  unsigned char r[8];
  RAND_bytes(r, sizeof r);
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : r) {
    instance_.push_back(hex[c >> 4]);
    instance_.push_back(hex[c & 15]);
  }
}

bool PushReceiver::restore() {
  auto saved = load_server_state(options_.data_dir);
  if (!saved) {
    log::warn("server_state_unreadable").kv("error", saved.errors().front().str());
    return false;
  }
  if (!*saved) return false;
  Errors errs = apply_((*saved)->caddyfile, (*saved)->version);
  if (!errs.empty()) {
    log::warn("server_state_not_loaded")
        .kv("version", (*saved)->version)
        .kv("error", errs.front().str());
    return false;
  }
  std::lock_guard lock(mu_);
  version_ = (*saved)->version;
  log::info("server_state_restored")
      .kv("version", version_.load())
      .kv("controller", (*saved)->controller);
  return true;
}

AdminResponse PushReceiver::handle(const AdminRequest& req) {
  const std::string& path = req.head.target;
  if (path == kVersionPath) {
    if (req.head.method != "GET") return text(405, "GET only");
    return {200, "application/json",
            json{{"version", version()}, {"instance", instance_}}.dump() + "\n"};
  }
  if (path == kConfigPath) {
    if (req.head.method != "POST") return text(405, "POST only");
    return push(req);
  }
  return text(404, "no such admin endpoint: " + path);
}

AdminResponse PushReceiver::push(const AdminRequest& req) {
  if (closing_) return text(503, "shutting down");
  std::lock_guard lock(mu_);
  auto plain = options_.key.open(kConfigPath, req.body);
  if (!plain) {
    log::warn("push_refused")
        .kv("peer", req.peer)
        .kv("bytes", static_cast<uint64_t>(req.body.size()))
        .kv("reason", plain.errors().front().message);
    return text(401, "push refused: " + plain.errors().front().message);
  }
  auto bundle = bundle_from_json(*plain);
  if (!bundle) {
    log::warn("push_invalid").kv("peer", req.peer).kv("error", bundle.errors().front().message);
    return text(400, bundle.errors().front().message);
  }
  // Versions are Unix milliseconds or just above: one far in the future would make every
  // later push look older (and could only come from a broken or hostile controller).
  const uint64_t now_ms =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  if (bundle->version > now_ms + kMaxVersionLead) {
    log::warn("push_invalid")
        .kv("peer", req.peer)
        .kv("error", "version " + std::to_string(bundle->version) + " is in the future");
    return text(400, "version " + std::to_string(bundle->version) +
                         " is more than a day ahead of this server's clock");
  }
  if (bundle->version < version_) {
    log::warn("push_stale")
        .kv("peer", req.peer)
        .kv("version", bundle->version)
        .kv("current", version_.load())
        .kv("controller", bundle->controller);
    return text(409, "version " + std::to_string(bundle->version) + " is older than ours (" +
                         std::to_string(version_.load()) + ")");
  }
  if (bundle->version == version_) {
    return {200, "application/json",
            json{{"version", version_.load()}, {"applied", false}}.dump() + "\n"};
  }
  auto written = apply_files(options_.data_dir, bundle->files, &closing_);
  if (!written) {
    log::error("push_files_unwritable")
        .kv("version", bundle->version)
        .kv("error", written.errors().front().str());
    return text(500, "cannot write pushed files: " + written.errors().front().str());
  }
  Errors errs = apply_(bundle->caddyfile, bundle->version);
  if (!errs.empty()) {
    std::vector<std::string> lines;
    for (const auto& e : errs) lines.push_back(e.str());
    log::warn("push_rejected")
        .kv("peer", req.peer)
        .kv("version", bundle->version)
        .kv("errors", lines);
    std::string body = "the pushed Caddyfile does not load here:";
    for (const auto& l : lines) body += "\n" + l;
    return text(422, body);
  }
  auto saved = save_server_state(options_.data_dir,
                                 {bundle->version, bundle->controller, bundle->caddyfile});
  if (!saved) {
    // Serving it anyway: only a restart would fall back to the previous push.
    log::error("server_state_unwritable").kv("error", saved.errors().front().str());
  }
  log::info("push_received")
      .kv("peer", req.peer)
      .kv("version", bundle->version)
      .kv("previous", version_.load())
      .kv("controller", bundle->controller)
      .kv("files_changed", static_cast<uint64_t>(*written));
  version_ = bundle->version;
  return {200, "application/json",
          json{{"version", version_.load()}, {"applied", true}}.dump() + "\n"};
}

}  // namespace hsp::cluster
