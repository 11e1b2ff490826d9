#include "docker-watch/client.h"

#include <curl/curl.h>

#include <mutex>
#include <nlohmann/json.hpp>

namespace hsp::docker {
namespace {

using nlohmann::json;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Easy {
  CURL* h = nullptr;
  Easy() : h(curl_easy_init()) {}
  ~Easy() {
    if (h) curl_easy_cleanup(h);
  }
};

size_t append_body(char* data, size_t size, size_t n, void* user) {
  auto* body = static_cast<std::string*>(user);
  // Listings of a large Swarm are a few MiB; anything far beyond is not a Docker answer.
  if (body->size() + size * n > (256u << 20)) return 0;
  body->append(data, size * n);
  return size * n;
}

// Docker's error bodies are {"message": "..."}.
std::string daemon_message(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("message") && j["message"].is_string())
    return j["message"].get<std::string>();
  std::string s = body.substr(0, 200);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace

struct Client::State {
  std::mutex mu;
  std::string api;  // negotiated
};

Client::Client(std::string socket, std::string api_version)
    : socket_(std::move(socket)), pinned_(std::move(api_version)), state_(new State) {
  global_init();
}

Client::~Client() = default;

std::string Client::api_version() const {
  if (!pinned_.empty()) return pinned_;
  std::lock_guard lock(state_->mu);
  return state_->api;
}

std::string Client::escape(std::string_view value) {
  std::string out;
  static const char kHex[] = "0123456789ABCDEF";
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

namespace {

struct Fetched {
  long status = 0;
  std::string body;
};

// One bounded GET over the socket. The host part of the URL is ignored by the daemon.
Result<Fetched> fetch(const std::string& socket, const std::string& path) {
  Easy easy;
  if (!easy.h) return Error{{}, "docker " + socket + ": GET " + path + ": curl_easy_init failed"};
  Fetched out;
  std::string url = "http://docker" + path;
  curl_easy_setopt(easy.h, CURLOPT_UNIX_SOCKET_PATH, socket.c_str());
  curl_easy_setopt(easy.h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy.h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy.h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
  curl_easy_setopt(easy.h, CURLOPT_TIMEOUT_MS, 15000L);
  curl_easy_setopt(easy.h, CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(easy.h, CURLOPT_WRITEDATA, &out.body);
  CURLcode rc = curl_easy_perform(easy.h);
  if (rc != CURLE_OK) {
    return Error{{}, "docker " + socket + ": GET " + path + ": " + curl_easy_strerror(rc)};
  }
  curl_easy_getinfo(easy.h, CURLINFO_RESPONSE_CODE, &out.status);
  if (out.status < 200 || out.status > 299) {
    return Error{{},
                 "docker " + socket + ": GET " + path + ": " + std::to_string(out.status) + " " +
                     daemon_message(out.body)};
  }
  return out;
}

}  // namespace

Result<std::string> Client::negotiate() {
  auto r = fetch(socket_, "/version");
  if (!r) return r.errors();
  auto j = json::parse(r->body, nullptr, false);
  if (!j.is_object() || !j.contains("ApiVersion") || !j["ApiVersion"].is_string()) {
    return Error{{}, "docker " + socket_ + ": GET /version: not a Docker version answer"};
  }
  {
    std::lock_guard lock(state_->mu);
    state_->api = j["ApiVersion"].get<std::string>();
  }
  return j.value("Version", std::string("unknown"));
}

Result<nlohmann::json> Client::get(std::string_view path_and_query) {
  if (api_version().empty()) {
    auto v = negotiate();
    if (!v) return v.errors();
  }
  std::string path = "/v" + api_version() + "/" + std::string(path_and_query);
  auto r = fetch(socket_, path);
  if (!r) return r.errors();
  auto j = json::parse(r->body, nullptr, false);
  if (j.is_discarded()) {
    return Error{{}, "docker " + socket_ + ": GET " + path + ": the answer is not JSON"};
  }
  return j;
}

namespace {

struct StreamCtx {
  std::string buf;
  const std::function<void(const json&)>* on_event;
  const std::atomic<bool>* stop;
  std::string bad;  // first unparsable line
};

size_t stream_write(char* data, size_t size, size_t n, void* user) {
  auto* ctx = static_cast<StreamCtx*>(user);
  ctx->buf.append(data, size * n);
  size_t start = 0;
  for (;;) {
    size_t nl = ctx->buf.find('\n', start);
    if (nl == std::string::npos) break;
    std::string_view line(ctx->buf.data() + start, nl - start);
    start = nl + 1;
    if (line.empty() || line == "\r") continue;
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      if (ctx->bad.empty()) ctx->bad = std::string(line.substr(0, 120));
      continue;
    }
    (*ctx->on_event)(j);
  }
  ctx->buf.erase(0, start);
  if (ctx->buf.size() > (1u << 20)) return 0;  // no newline in 1 MiB: not an event stream
  return size * n;
}

// Called by curl about once a second even when no data flows: how a stop request ends a
// stream that is waiting for the next event.
int stream_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<StreamCtx*>(user)->stop->load() ? 1 : 0;
}

}  // namespace

Errors Client::stream_events(std::string_view query,
                             const std::function<void(const nlohmann::json&)>& on_event,
                             const std::atomic<bool>& stop) {
  if (api_version().empty()) {
    auto v = negotiate();
    if (!v) return v.errors();
  }
  std::string path = "/v" + api_version() + "/events?" + std::string(query);
  Easy easy;
  if (!easy.h) return {Error{{}, "docker " + socket_ + ": events: curl_easy_init failed"}};
  StreamCtx ctx{{}, &on_event, &stop, {}};
  std::string url = "http://docker" + path;
  curl_easy_setopt(easy.h, CURLOPT_UNIX_SOCKET_PATH, socket_.c_str());
  curl_easy_setopt(easy.h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy.h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy.h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
  curl_easy_setopt(easy.h, CURLOPT_WRITEFUNCTION, stream_write);
  curl_easy_setopt(easy.h, CURLOPT_WRITEDATA, &ctx);
  curl_easy_setopt(easy.h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(easy.h, CURLOPT_XFERINFOFUNCTION, stream_progress);
  curl_easy_setopt(easy.h, CURLOPT_XFERINFODATA, &ctx);
  curl_easy_setopt(easy.h, CURLOPT_FAILONERROR, 1L);
  CURLcode rc = curl_easy_perform(easy.h);
  if (stop.load()) return {};
  std::string why = rc == CURLE_OK ? std::string("event stream closed by the daemon")
                                   : std::string(curl_easy_strerror(rc));
  if (rc == CURLE_HTTP_RETURNED_ERROR) {
    long status = 0;
    curl_easy_getinfo(easy.h, CURLINFO_RESPONSE_CODE, &status);
    why = "HTTP " + std::to_string(status);
  }
  if (!ctx.bad.empty()) why += " (unparsable event: " + ctx.bad + ")";
  return {Error{{}, "docker " + socket_ + ": GET " + path + ": " + why}};
}

}  // namespace hsp::docker
