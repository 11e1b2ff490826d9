// A stable text dump of a parsed Caddyfile, for golden tests and debugging. One line per
// directive, two spaces of indentation per block level; every token is followed by
// @line:col (with the file name when it differs from `main_file`):
//
//   global @1:1
//     admin@2:3 off@2:9
//   site @4:1 a.com@4:1 b.com@4:8
//     reverse_proxy@5:3 127.0.0.1:9000@5:17 {@5:32
//       lb_policy@6:5 first@6:15
//     }
//
// Unquoted tokens print as they are unless they hold whitespace, control bytes, quotes or
// backslashes; then, like quoted tokens, they print escaped between delimiters that name how
// they were written: u"..." (unquoted), "..." (double quotes), `...` (backticks, escaped the
// same way), <<"..." (heredoc). A directive brought in by an import ends with
// "  # via <import chain, outermost first>".
#pragma once

#include <string>

#include "caddyfile/ast.h"

namespace hsp::caddyfile {

std::string dump(const File& file, const std::string& main_file = "Caddyfile");
std::string dump_token(const Token& token, const std::string& main_file = "Caddyfile");

}  // namespace hsp::caddyfile
