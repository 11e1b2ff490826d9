#include "cluster/bundle.h"

#include <dirent.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "acme/storage.h"
#include "tls/certified_key.h"
#include "util/base64url.h"

namespace hsp::cluster {
namespace {

using nlohmann::json;

constexpr size_t kFileLimit = size_t{1} << 20;
constexpr size_t kMaxFiles = 30000;
constexpr int kMaxDepth = 8;
constexpr std::string_view kChallenges = "acme/challenge_tokens/";
const std::vector<std::string_view> kTrees = {"certificates/", kChallenges};

Error bundle_error(const std::string& what) {
  return Error{{}, "push bundle: " + what};
}

// A relative path inside one of the pushed trees, without empty, '.', '..' or hidden
// components: nothing a push names can land outside them.
std::optional<std::string> check_path(const std::string& path) {
  bool inside = false;
  for (auto tree : kTrees) inside |= path.rfind(tree, 0) == 0;
  if (!inside) return "path '" + path + "' is outside the pushed trees";
  if (path.size() > 1024) return "path longer than 1024 bytes";
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    std::string_view part(path.data() + start, slash - start);
    if (part.empty() || part.front() == '.') return "path '" + path + "' has a bad component";
    if (part.size() > 255) return "path '" + path + "' has a component over 255 bytes";
    for (char c : part) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        return "path '" + path + "' has a control byte";
    }
    start = slash + 1;
  }
  return std::nullopt;
}

// Whether JSON text nests deeper than `max` (strings skipped): checked before parsing, since
// the parser's memory grows with depth (a 64 MiB "[[[[..." would take gigabytes).
bool nests_deeper(std::string_view text, int max) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// Whether a directory on the way from `data_dir` to `rel`'s file is a symbolic link (a
// planted link would take writes, or deletions, outside the data directory).
bool through_symlink(const std::string& data_dir, const std::string& rel) {
  for (size_t slash = rel.find('/'); slash != std::string::npos; slash = rel.find('/', slash + 1)) {
    struct stat st {};
    if (::lstat((data_dir + "/" + rel.substr(0, slash)).c_str(), &st) != 0) return false;
    if (S_ISLNK(st.st_mode)) return true;
  }
  return false;
}

void walk(const std::string& root, const std::string& rel, std::vector<BundleFile>& out,
          Errors& errs, int depth) {
  if (depth > 8) return;
  std::string dir = root + "/" + rel;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno != ENOENT) errs.push_back(Error{{dir, 0, 0}, std::strerror(errno)});
    return;
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;  // ., .., and temporaries
    names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::string sub = rel + name;
    struct stat st {};
    if (::lstat((root + "/" + sub).c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      walk(root, sub + "/", out, errs, depth + 1);
    } else if (S_ISREG(st.st_mode)) {
      auto text = tls::read_file_if_exists(root + "/" + sub, kFileLimit);
      if (!text) {
        errs.push_back(text.errors().front());
      } else if (*text) {
        out.push_back({sub, (st.st_mode & 077) == 0 ? 0600u : 0644u, std::move(**text)});
      }
    }
  }
}

// The state file <data>/cluster/<name>: nullopt when there is none; an Error naming the file
// when it is damaged or lacks an unsigned 'version' or a string `text_field`.
Result<std::optional<json>> read_state(const std::string& data_dir, const std::string& name,
                                       const char* text_field) {
  std::string path = data_dir + "/cluster/" + name;
  auto text = tls::read_file_if_exists(path, kFileLimit * 64 + 4096);
  if (!text) return text.errors();
  if (!*text) return std::optional<json>();
  if (nests_deeper(**text, kMaxDepth)) return Error{{path, 0, 0}, "JSON nested too deep"};
  json j = json::parse(**text, nullptr, false);
  if (!j.is_object()) return Error{{path, 0, 0}, "not a JSON object"};
  if (!j.contains("version") || !j["version"].is_number_unsigned() || !j.contains(text_field) ||
      !j[text_field].is_string()) {
    return Error{{path, 0, 0}, std::string("needs 'version' and '") + text_field + "'"};
  }
  return std::optional<json>(std::move(j));
}

}  // namespace

std::string bundle_to_json(const Bundle& b) {
  json files = json::array();
  for (const auto& f : b.files)
    files.push_back({{"path", f.path}, {"mode", f.mode}, {"data", base64url(f.data)}});
  return json{{"version", b.version},
              {"controller", b.controller},
              {"caddyfile", b.caddyfile},
              {"files", files}}
      .dump();
}

Result<Bundle> bundle_from_json(std::string_view text) {
  if (nests_deeper(text, kMaxDepth)) return bundle_error("JSON nested too deep");
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return bundle_error("not a JSON object");
  Bundle b;
  if (!j.contains("version") || !j["version"].is_number_unsigned())
    return bundle_error("'version' must be an unsigned integer");
  b.version = j["version"].get<uint64_t>();
  if (!j.contains("caddyfile") || !j["caddyfile"].is_string())
    return bundle_error("'caddyfile' must be a string");
  b.caddyfile = j["caddyfile"].get<std::string>();
  if (j.contains("controller")) {
    if (!j["controller"].is_string()) return bundle_error("'controller' must be a string");
    b.controller = j["controller"].get<std::string>();
  }
  if (!j.contains("files") || !j["files"].is_array()) return bundle_error("'files' must be a list");
  if (j["files"].size() > kMaxFiles)
    return bundle_error(std::to_string(j["files"].size()) + " files; at most 30000");
  std::set<std::string> seen;
  for (const auto& f : j["files"]) {
    if (!f.is_object() || !f.contains("path") || !f["path"].is_string() || !f.contains("data") ||
        !f["data"].is_string() || !f.contains("mode") || !f["mode"].is_number_unsigned()) {
      return bundle_error("each file needs a string 'path', a number 'mode' and a string 'data'");
    }
    BundleFile bf;
    bf.path = f["path"].get<std::string>();
    if (auto bad = check_path(bf.path)) return bundle_error(*bad);
    if (!seen.insert(bf.path).second) return bundle_error("path '" + bf.path + "' twice");
    uint64_t mode = f["mode"].get<uint64_t>();  // not get<unsigned>: 2^32 + 0600 would pass
    if (mode != 0600 && mode != 0644)
      return bundle_error("path '" + bf.path + "': mode must be 0600 or 0644");
    bf.mode = static_cast<unsigned>(mode);
    auto data = base64url_decode(f["data"].get<std::string>());
    if (!data) return bundle_error("path '" + bf.path + "': " + data.errors().front().message);
    if (data->size() > kFileLimit) return bundle_error("path '" + bf.path + "' over 1 MiB");
    bf.data = std::move(*data);
    b.files.push_back(std::move(bf));
  }
  std::sort(b.files.begin(), b.files.end(),
            [](const BundleFile& x, const BundleFile& y) { return x.path < y.path; });
  return b;
}

Result<std::vector<BundleFile>> collect_files(const std::string& data_dir) {
  std::vector<BundleFile> out;
  Errors errs;
  for (auto tree : kTrees) walk(data_dir, std::string(tree), out, errs, 0);
  if (!errs.empty()) return errs;
  std::sort(out.begin(), out.end(),
            [](const BundleFile& x, const BundleFile& y) { return x.path < y.path; });
  return out;
}

Result<size_t> apply_files(const std::string& data_dir, const std::vector<BundleFile>& files,
                           const std::atomic<bool>* cancel) {
  size_t changed = 0;
  std::set<std::string> pushed;
  for (const auto& f : files) {
    if (cancel && *cancel) return bundle_error("stopped: shutting down");
    if (auto bad = check_path(f.path)) return bundle_error(*bad);
    if (through_symlink(data_dir, f.path))
      return bundle_error("'" + data_dir + "/" + f.path + "' goes through a symbolic link");
    pushed.insert(f.path);
    std::string path = data_dir + "/" + f.path;
    auto current = tls::read_file_if_exists(path, kFileLimit);
    if (current && *current && **current == f.data) continue;
    auto wrote = acme::write_file_atomic(path, f.data, f.mode);
    if (!wrote) return wrote.errors();
    ++changed;
  }
  // Challenge answers are the controller's whole set: one it no longer has is finished. Only
  // that tree is read (the certificates were compared above).
  std::vector<BundleFile> answers;
  Errors unreadable;
  walk(data_dir, std::string(kChallenges), answers, unreadable, 0);
  for (const auto& f : answers) {
    if (pushed.count(f.path) || through_symlink(data_dir, f.path)) continue;
    if (::unlink((data_dir + "/" + f.path).c_str()) == 0) ++changed;
  }
  return changed;
}

std::string bundle_digest(const Bundle& b) {
  // Length-prefixed parts, so that moving bytes between parts changes the digest.
  std::string all;
  auto add = [&](std::string_view s) {
    all += std::to_string(s.size());
    all += ':';
    all += s;
  };
  add(b.caddyfile);
  for (const auto& f : b.files) {
    add(f.path);
    add(std::to_string(f.mode));
    add(f.data);
  }
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(all.data()), all.size(), md);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : md) {
    out.push_back(hex[c >> 4]);
    out.push_back(hex[c & 15]);
  }
  return out;
}

Result<bool> save_server_state(const std::string& data_dir, const ServerState& s) {
  json j{{"version", s.version}, {"controller", s.controller}, {"caddyfile", s.caddyfile}};
  return acme::write_file_atomic(data_dir + "/cluster/server.json", j.dump(2) + "\n", 0600);
}

Result<std::optional<ServerState>> load_server_state(const std::string& data_dir) {
  auto j = read_state(data_dir, "server.json", "caddyfile");
  if (!j) return j.errors();
  if (!*j) return std::optional<ServerState>();
  ServerState s;
  s.version = (**j)["version"].get<uint64_t>();
  s.caddyfile = (**j)["caddyfile"].get<std::string>();
  if (auto c = (**j).find("controller"); c != (**j).end() && c->is_string())
    s.controller = c->get<std::string>();
  return std::optional<ServerState>(std::move(s));
}

Result<bool> save_controller_state(const std::string& data_dir, const ControllerState& s) {
  json j{{"version", s.version}, {"digest", s.digest}};
  return acme::write_file_atomic(data_dir + "/cluster/controller.json", j.dump(2) + "\n", 0600);
}

Result<std::optional<ControllerState>> load_controller_state(const std::string& data_dir) {
  auto j = read_state(data_dir, "controller.json", "digest");
  if (!j) return j.errors();
  if (!*j) return std::optional<ControllerState>();
  return std::optional<ControllerState>(
      ControllerState{(**j)["version"].get<uint64_t>(), (**j)["digest"].get<std::string>()});
}

}  // namespace hsp::cluster
