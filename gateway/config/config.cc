#include "config/config.h"

namespace hsp::config {

bool MatcherSet::empty() const {
  return host.empty() && path.empty() && path_regexp.empty() && method.empty() && header.empty() &&
         header_regexp.empty() && query.empty() && remote_ip.empty() && client_ip.empty() &&
         !protocol && not_sets.empty();
}

}  // namespace hsp::config
