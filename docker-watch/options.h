// caddy-docker-proxy's (CDP) options for watching Docker, with CDP's flag names, environment
// variables and defaults (docs/label-dialect.md §1b). Each option is declared once, in the table
// in options.cc, with its default and its validator.
//
// Differences from CDP, on purpose: an invalid value is a start-up error naming the option and
// where the value came from (CDP logs and falls back, or silently picks a default); an
// environment variable set to the empty string counts as unset, as in CDP.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"

namespace hsp::docker {

enum class Mode { standalone, controller, server };

struct Options {
  Mode mode = Mode::standalone;
  // Unix socket paths (from `unix:///path` or a bare path), one Docker client each.
  std::vector<std::string> docker_sockets;
  // Per socket, aligned by index: an API version such as "1.41" to pin, or "" to negotiate.
  std::vector<std::string> docker_apis_version;
  // The controller network (a CIDR): where a controller finds its servers' addresses and where
  // a server's admin listener binds and takes pushes from.
  std::string controller_network;
  std::vector<std::string> ingress_networks;  // names; empty: the gateway container's networks
  std::string caddyfile_path;                 // base Caddyfile, re-read every cycle
  std::string envfile;                        // KEY=VALUE file loaded into the environment
  std::string label_prefix = "caddy";
  bool proxy_service_tasks = true;
  bool process_caddyfile = true;
  bool scan_stopped_containers = false;
  bool no_scope = false;  // CADDY_DOCKER_NO_SCOPE: no `scope` event filter (Podman)
  std::chrono::milliseconds polling_interval{30000};
  std::chrono::milliseconds event_throttle_interval{100};
  std::string log_level;  // CADDY_DOCKER_LOG_LEVEL, applied by the caller
  // Controller and server modes (cluster/); not CDP's, hence HSP_ variables.
  std::string push_secret_file;                 // the shared secret both ends seal pushes with
  std::vector<std::string> controller_servers;  // "host:port" servers outside Swarm discovery
  std::string admin_listen;  // a server's admin listener; default <controller network ip>:2019
  std::chrono::milliseconds push_check_interval{5000};
};

// The port a server's admin listener takes when only the controller network is given (CDP's
// Caddy admin port).
inline constexpr int kAdminPort = 2019;

// True when `flag` (without `--` and `=value`) names one of the options above.
bool is_option_flag(std::string_view flag);
// True when the option is a boolean: `--flag` alone means true, `--flag=false` false.
bool is_bool_flag(std::string_view flag);

// A boolean as CDP's options take it (true/yes/1, false/no/0, any case); nothing otherwise.
std::optional<bool> parse_bool(std::string_view text);

// Flag values as given on the command line, keyed by flag name without `--`.
using FlagValues = std::map<std::string, std::string>;
using Getenv = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment.
Getenv process_env();

// Combines defaults, flags and environment (a non-empty variable wins over its flag, as in
// CDP). Errors name the option and the source of the bad value. `default_socket` is used when
// neither the option nor DOCKER_HOST says where Docker is.
Result<Options> resolve(const FlagValues& flags, const Getenv& env,
                        std::string default_socket = "/var/run/docker.sock");

// Go's time.ParseDuration for the units CDP users write: "30s", "1m30s", "100ms", "1.5h", "0".
std::optional<std::chrono::nanoseconds> parse_go_duration(std::string_view text);

// One line per option with its flag, variable and default, for `hsp-gateway help`.
std::string describe_options();

// Loads KEY=VALUE lines (blank lines and `#` comments skipped, optional `export `, values
// optionally quoted) into the environment without overriding variables already set. Errors
// name the file and line.
Errors load_envfile(const std::string& path);

}  // namespace hsp::docker
