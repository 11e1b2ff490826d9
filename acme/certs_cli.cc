#include "acme/certs_cli.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <vector>

#include "acme/storage.h"

namespace hsp::acme {
namespace {

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out += ',';
    out += n;
  }
  return out;
}

std::string time_or_dash(const std::optional<SystemTime>& t) {
  return t ? rfc3339(*t) : "-";
}

// A table cell stays on one line, whatever the CA's problem document held.
std::string one_line(const std::string& s) {
  std::string out = s;
  std::replace_if(
      out.begin(), out.end(), [](char c) { return c == '\n' || c == '\r' || c == '\t'; }, ' ');
  return out;
}

nlohmann::json time_or_null(const std::optional<SystemTime>& t) {
  return t ? nlohmann::json(rfc3339(*t)) : nlohmann::json(nullptr);
}

std::string first_name(const StoredCert& c) {
  return c.meta.names.empty() ? std::string() : c.meta.names.front();
}

}  // namespace

int print_certs(const std::string& data_dir, bool json, std::string& out) {
  struct stat st {};
  if (::stat(data_dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    out += "hsp-gateway certs: " + data_dir + " is not a directory\n";
    return 1;
  }
  std::vector<StoredCert> certs = Storage(data_dir).list();
  std::stable_sort(certs.begin(), certs.end(), [](const StoredCert& a, const StoredCert& b) {
    auto ka = first_name(a), kb = first_name(b);
    return ka != kb ? ka < kb : a.meta.issuer < b.meta.issuer;
  });

  if (json) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& c : certs) {
      const CertMeta& m = c.meta;
      rows.push_back({{"names", m.names},
                      {"issuer", m.issuer},
                      {"not_after", time_or_null(m.not_after)},
                      {"renew_at", time_or_null(m.renew_at)},
                      {"last_error", m.last_error.empty() ? nlohmann::json(nullptr)
                                                          : nlohmann::json(m.last_error)},
                      // Beyond the table: when the failure happened and when the back-off
                      // allows the next try.
                      {"last_error_at", time_or_null(m.last_error_at)},
                      {"next_attempt", time_or_null(m.next_attempt)},
                      {"failures", m.failures}});
    }
    out += rows.dump(2) + "\n";
    return 0;
  }

  if (certs.empty()) {
    out += "no certificates are managed under " + data_dir + "\n";
    return 0;
  }
  using Row = std::array<std::string, 5>;
  std::vector<Row> rows = {{"NAMES", "ISSUER", "NOT AFTER", "RENEW AT", "LAST ERROR"}};
  for (const auto& c : certs) {
    const CertMeta& m = c.meta;
    rows.push_back({join(m.names), m.issuer, time_or_dash(m.not_after), time_or_dash(m.renew_at),
                    m.last_error.empty() ? "-" : one_line(m.last_error)});
  }
  std::array<size_t, 5> width{};
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return 0;
}

}  // namespace hsp::acme
