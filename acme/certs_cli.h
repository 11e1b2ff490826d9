// `hsp-gateway certs`: the certificates managed under a data directory, read from the shared
// storage (acme/storage.h) rather than from a running process, so that any replica, or a shell
// on the volume, prints the same table, and it works while the gateway is down.
#pragma once

#include <string>

namespace hsp::acme {

// Appends the listing to `out` and returns the exit status. One row per managed certificate,
// sorted by its first name: names, issuer, not after, next renewal, last error ("-" for none).
// `json`: a JSON array with one object per row instead (times RFC 3339 UTC or null), for
// scripts. A missing or empty data directory is not an error: the text form says that nothing
// is managed there, the JSON form is "[]". A data directory that is not a directory returns 1.
int print_certs(const std::string& data_dir, bool json, std::string& out);

}  // namespace hsp::acme
