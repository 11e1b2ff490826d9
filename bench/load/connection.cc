#include "connection.h"

#include "driver.h"

namespace hsp::bench {

const char* error_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::none:
      return "none";
    case ErrorKind::connect:
      return "connect";
    case ErrorKind::tls:
      return "tls";
    case ErrorKind::protocol:
      return "protocol";
    case ErrorKind::reset:
      return "reset";
    case ErrorKind::timeout:
      return "timeout";
  }
  return "unknown";
}

const char* proto_name(Proto proto) {
  switch (proto) {
    case Proto::h1:
      return "h1";
    case Proto::h2:
      return "h2";
    case Proto::h2c:
      return "h2c";
    case Proto::h3:
      return "h3";
  }
  return "unknown";
}

}  // namespace hsp::bench
