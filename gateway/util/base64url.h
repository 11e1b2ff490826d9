// Unpadded base64url (RFC 4648 §5), as JWS (RFC 7515 §2), ACME (RFC 8555) and HTTP/2's
// HTTP2-Settings (RFC 7540 §3.2.1) use it.
#pragma once

#include <string>
#include <string_view>

#include "util/error.h"

namespace hsp {

std::string base64url(std::string_view bytes);
// Strict: no padding, only the alphabet, no impossible length, zero trailing bits (so that one
// byte string has one text). Errors quote the start of the input.
Result<std::string> base64url_decode(std::string_view text);

}  // namespace hsp
