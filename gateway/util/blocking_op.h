// One asynchronous Asio operation run as a blocking call with a deadline and a stop flag, on a
// private io_context that only the calling thread runs. For the clients that talk to something
// outside the data plane from a thread of their own (the Docker daemon, an ACME CA): blocking
// and bounded, without a thread per request. Header-only; include it only where Asio already is.
#pragma once

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>

namespace hsp {

enum class BlockingOutcome { done, timed_out, stopped };

// Starts the operation through `start(handler)` and runs `ioc` until its handler has run,
// `deadline` passes or `*stop` turns true (`stop` may be null; it is looked at every `poll`).
// On the last two `abort()` must make the operation end (close its socket): its handler still
// runs before this returns, since it refers to the caller's locals. `ec` is the operation's.
template <typename Start, typename Abort>
BlockingOutcome run_blocking(boost::asio::io_context& ioc, Start&& start, Abort&& abort,
                             std::chrono::steady_clock::time_point deadline,
                             const std::atomic<bool>* stop, std::chrono::milliseconds poll,
                             boost::system::error_code& ec) {
  using Clock = std::chrono::steady_clock;
  bool done = false;
  start([&](boost::system::error_code e, auto&&...) {
    ec = e;
    done = true;
  });
  while (!done) {
    const bool stopping = stop && stop->load();
    const auto now = Clock::now();
    if (stopping || now >= deadline) {
      abort();
      ioc.run();  // the aborted handler
      ioc.restart();
      return stopping ? BlockingOutcome::stopped : BlockingOutcome::timed_out;
    }
    Clock::duration slice = deadline - now;
    if (stop) slice = std::min<Clock::duration>(slice, poll);
    ioc.run_one_for(slice);
  }
  // The context ran out of work with the handler; the next step needs it running again.
  ioc.restart();
  return BlockingOutcome::done;
}

}  // namespace hsp
