#include "tls/cert_selector.h"

namespace hsp::tls {

std::shared_ptr<const CertSelector> CertSelector::build(
    std::vector<Entry> entries, std::shared_ptr<const CertifiedKey> default_cert) {
  auto sel = std::make_shared<CertSelector>();
  sel->choices_.reserve(entries.size() + 1);
  for (auto& entry : entries) {
    if (!entry.cert) continue;
    const CertifiedKey* cert = entry.cert.get();
    const size_t index = sel->choices_.size();
    sel->choices_.push_back({cert, entry.min_version, entry.max_version});
    std::vector<std::string> names = entry.names;
    if (names.empty()) {
      names = cert->dns_names();
      names.insert(names.end(), cert->ip_addresses().begin(), cert->ip_addresses().end());
    }
    for (const auto& raw : names) {
      std::string name = normalize_name(raw);
      if (name.size() > 2 && name.compare(0, 2, "*.") == 0) {
        sel->wildcard_.emplace(name.substr(2), index);  // emplace keeps the first claim
      } else if (!name.empty()) {
        sel->exact_.emplace(std::move(name), index);
      }
    }
    sel->certs_.push_back(std::move(entry.cert));
  }
  if (default_cert) {
    // The default answers names no entry claims: the listener's version range applies.
    sel->choices_.push_back({default_cert.get(), 0, 0});
    sel->has_default_ = true;
    sel->certs_.push_back(std::move(default_cert));
  }
  return sel;
}

const CertSelector::Choice* CertSelector::choose(std::string_view sni) const {
  if (!sni.empty()) {
    std::string name = normalize_name(sni);
    if (auto it = exact_.find(name); it != exact_.end()) return &choices_[it->second];
    size_t dot = name.find('.');
    // "a.example.com" looks for "*.example.com"; a bare label has no wildcard to match.
    if (dot != std::string::npos && dot > 0 && dot + 1 < name.size()) {
      if (auto it = wildcard_.find(name.substr(dot + 1)); it != wildcard_.end()) {
        return &choices_[it->second];
      }
    }
  }
  return has_default_ ? &choices_.back() : nullptr;
}

const CertifiedKey* CertSelector::select(std::string_view sni) const {
  const Choice* c = choose(sni);
  return c ? c->cert : nullptr;
}

}  // namespace hsp::tls
