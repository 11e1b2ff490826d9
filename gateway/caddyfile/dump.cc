#include "caddyfile/dump.h"

namespace hsp::caddyfile {
namespace {

std::string escaped(const std::string& s) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\x";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

bool bare(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c == 0x7f || c == '"' || c == '\\' || c == '`') return false;
  }
  return true;
}

std::string loc_suffix(const SourceLoc& loc, const std::string& main_file) {
  std::string out = "@";
  if (loc.file != main_file) out += loc.file + ":";
  return out + std::to_string(loc.line) + ":" + std::to_string(loc.col);
}

void dump_directives(const std::vector<Directive>& ds, int depth, const std::string& main_file,
                     std::string& out) {
  for (const Directive& d : ds) {
    out.append(static_cast<size_t>(depth) * 2, ' ');
    out += dump_token(d.name, main_file);
    for (const Token& a : d.args) out += " " + dump_token(a, main_file);
    if (d.has_block) {
      SourceLoc open = d.block_open;
      out += " {" + loc_suffix(open, main_file);
    }
    if (!d.name.imported_from.empty()) {
      out += "  # via ";
      for (size_t i = 0; i < d.name.imported_from.size(); ++i) {
        if (i > 0) out += " > ";
        out += d.name.imported_from[i];
      }
    }
    out += "\n";
    if (d.has_block) {
      dump_directives(d.block, depth + 1, main_file, out);
      out.append(static_cast<size_t>(depth) * 2, ' ');
      out += "}\n";
    }
  }
}

}  // namespace

std::string dump_token(const Token& t, const std::string& main_file) {
  std::string out;
  switch (t.quote) {
    case Token::Quote::none:
      out = bare(t.text) ? t.text : "u\"" + escaped(t.text) + "\"";
      break;
    case Token::Quote::dquote:
      out = "\"" + escaped(t.text) + "\"";
      break;
    case Token::Quote::backtick:
      out = "`" + escaped(t.text) + "`";
      break;
    case Token::Quote::heredoc:
      out = "<<\"" + escaped(t.text) + "\"";
      break;
  }
  return out + loc_suffix(t.loc, main_file);
}

std::string dump(const File& file, const std::string& main_file) {
  std::string out;
  if (file.has_global_options) {
    out += "global " + loc_suffix(file.global_options.loc, main_file) + "\n";
    dump_directives(file.global_options.directives, 1, main_file, out);
  }
  for (const ServerBlock& sb : file.blocks) {
    out += "site " + loc_suffix(sb.loc, main_file);
    for (const Token& k : sb.keys) out += " " + dump_token(k, main_file);
    if (!sb.keys.empty() && !sb.keys[0].imported_from.empty()) {
      out += "  # via ";
      for (size_t i = 0; i < sb.keys[0].imported_from.size(); ++i) {
        if (i > 0) out += " > ";
        out += sb.keys[0].imported_from[i];
      }
    }
    out += "\n";
    dump_directives(sb.directives, 1, main_file, out);
  }
  return out;
}

}  // namespace hsp::caddyfile
