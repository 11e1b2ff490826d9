#include "util/error.h"

namespace hsp {

std::string SourceLoc::str() const {
  if (line == 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(col);
}

std::string Error::str() const {
  std::string out = loc.str();
  if (!out.empty()) out += ": ";
  return out + message;
}

}  // namespace hsp
