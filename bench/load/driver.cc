#include "driver.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

namespace hsp::bench {

namespace asio = boost::asio;
using error_code = boost::system::error_code;

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t to_ns(double s) {
  return int64_t(std::llround(s * 1e9));
}

// Open loop: the shortest sleep between two releases. The pacer releases every request that is
// due when it wakes, so at high rates one timer arm serves several requests instead of one
// (re-arming the timer per request cost two thirds of the CPU in the kernel's timerfd_settime
// and halved the reachable rate). A request may so leave up to this much after its due time;
// its latency counts from the due time, so the delay shows instead of hiding.
constexpr int64_t kMinPaceSleepNs = 100'000;

// What the report says about an error kind when the failure carried no text of its own.
const char* default_detail(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::connect:
      return "could not connect";
    case ErrorKind::tls:
      return "TLS handshake failed";
    case ErrorKind::protocol:
      return "the server broke the protocol";
    case ErrorKind::reset:
      return "stream reset or connection closed before the response ended";
    case ErrorKind::timeout:
      return "no response within --timeout";
    case ErrorKind::none:
      break;
  }
  return "";
}

class Worker : public ConnectionEvents {
 public:
  Worker(const LoadConfig& cfg, uint32_t index, uint32_t connections, uint64_t quota,
         Progress* progress)
      : cfg_(cfg),
        index_(index),
        quota_(quota),
        progress_(progress),
        stop_timer_(io_),
        pace_timer_(io_),
        sweep_timer_(io_),
        window_timer_(io_) {
    slots_.resize(connections);
  }

  void run() {
    started_ = now_ns();
    for (uint32_t i = 0; i < slots_.size(); ++i) open(i);
    arm_sweep();
    io_.run();
  }

  LoadResult& result() { return result_; }
  int64_t window_start() const { return window_start_; }
  // Duration mode: the planned end, or the last response of the drain if later. -n mode: the
  // last response (the end of the run when none came).
  int64_t window_end() const {
    if (window_end_ > 0) return std::max(window_end_, last_completion_);
    return last_completion_ > 0 ? last_completion_ : finished_at_;
  }
  bool measured() const { return phase_ != Phase::connecting; }

  // ConnectionEvents.
  void on_ready(Connection& conn) override {
    Slot& s = slot_of(conn);
    s.ready = true;
    s.ever_ready = true;
    s.last_progress = now_ns();
    if (phase_ == Phase::connecting) {
      maybe_begin();
    } else {
      fill(s);
    }
  }

  void on_complete(Connection& conn, uint64_t tag, const Completion& done) override {
    Slot& s = slot_of(conn);
    int64_t now = now_ns();
    --s.inflight;
    --inflight_;
    s.last_progress = now;
    if (done.refused && !s.timed_out && phase_ == Phase::running) {
      // Never processed: sent again (first thing) on whichever connection has room, keeping
      // its original start so the latency covers the detour.
      retry_.push_back(int64_t(tag));
      if (int64_t(tag) >= window_start_) ++result_.retried;
      for (Slot& other : slots_) {
        if (&other != &s) fill(other);
      }
    } else if (done.refused && phase_ != Phase::done) {
      if (int64_t(tag) >= window_start_) ++result_.not_sent;  // too late to resend
      maybe_stop_on_quota();
    } else {
      record(int64_t(tag), done, now, s.timed_out);
    }
    if (phase_ == Phase::running) {
      fill(s);
    } else if (phase_ == Phase::draining && inflight_ == 0) {
      finish();
    }
  }

  void on_closed(Connection& conn, ErrorKind why, const std::string& detail) override {
    uint32_t idx = index_of(conn);
    Slot& s = slots_[idx];
    int64_t now = now_ns();
    s.ready = false;
    if (s.timed_out && !s.ever_ready) why = ErrorKind::timeout;
    if (why != ErrorKind::none && !s.ever_ready) {
      // A connection that never carried a request: its failure is an error of its own (a
      // request's failures are counted through on_complete). In -n mode it uses up one request,
      // so that a dead server ends the run instead of being retried forever.
      count_error(why, detail, now);
      if (quota_ > 0 && phase_ != Phase::connecting && issued_ < quota_) {
        ++issued_;
        maybe_stop_on_quota();
      }
    } else if (why != ErrorKind::none && !s.timed_out && !detail.empty() &&
               (result_.error_example[size_t(why)].empty() || example_is_default_[size_t(why)])) {
      // The connection's own words beat the generic text its requests' failures left.
      result_.error_example[size_t(why)] = detail;
      example_is_default_[size_t(why)] = false;
    }
    retired_in_ += conn.bytes_in();
    retired_out_ += conn.bytes_out();
    // The connection may not be destroyed during this call: it goes at the loop's next turn
    // (or with the worker, if the run ends first).
    retired_.push_back(std::move(s.conn));
    by_conn_.erase(&conn);
    if (!cleanup_posted_) {
      cleanup_posted_ = true;
      asio::post(io_, [this] {
        cleanup_posted_ = false;
        retired_.clear();
      });
    }
    bool failed_early = !s.ever_ready;
    s = Slot{};
    if (phase_ == Phase::connecting) {
      s.settled = true;
      maybe_begin();  // begin() reopens the slots that failed
      return;
    }
    if (phase_ != Phase::running) return;
    ++result_.reconnects;
    if (failed_early) {
      // Back off a little so that a refusing server is not hammered in a tight loop.
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(50));
      timer->async_wait([this, idx, timer](const error_code& ec) {
        if (!ec && phase_ == Phase::running && !slots_[idx].conn) open(idx);
      });
    } else {
      open(idx);
    }
  }

 private:
  enum class Phase { connecting, running, draining, done };

  struct Slot {
    std::unique_ptr<Connection> conn;
    bool ready = false;
    bool ever_ready = false;
    bool settled = false;  // ready or failed once (the start waits for every slot)
    bool timed_out = false;
    bool listed = false;  // in idle_ (open loop)
    uint32_t inflight = 0;
    int64_t opened = 0;
    int64_t last_progress = 0;
  };

  void open(uint32_t idx) {
    Slot& s = slots_[idx];
    switch (cfg_.endpoint.proto) {
      case Proto::h1:
        s.conn = make_h1_connection(io_, cfg_.endpoint, cfg_.request, *this);
        break;
      case Proto::h2:
      case Proto::h2c:
        s.conn = make_h2_connection(io_, cfg_.endpoint, cfg_.request, *this, cfg_.streams);
        break;
      case Proto::h3:
        s.conn = make_h3_connection(io_, cfg_.endpoint, cfg_.request, *this, cfg_.streams);
        break;
    }
    s.opened = s.last_progress = now_ns();
    by_conn_[s.conn.get()] = idx;
    s.conn->start();
  }

  uint32_t index_of(Connection& conn) { return by_conn_.at(&conn); }
  Slot& slot_of(Connection& conn) { return slots_[index_of(conn)]; }

  void maybe_begin() {
    for (const Slot& s : slots_) {
      if (!s.ready && !s.settled) return;
    }
    begin();
  }

  void begin() {
    phase_ = Phase::running;
    int64_t t0 = now_ns();
    window_start_ = t0 + to_ns(cfg_.warmup_s);
    if (cfg_.requests == 0) window_end_ = window_start_ + to_ns(cfg_.duration_s);
    if (cfg_.rate > 0) {
      OpenLoopSchedule sched(t0, cfg_.rate, cfg_.threads, index_);
      uint64_t limit = UINT64_MAX;
      if (quota_ > 0) limit = sched.due_count(window_start_ - 1) + quota_;
      pacer_.emplace(sched, limit);
    }
    if (cfg_.warmup_s > 0) {
      window_timer_.expires_after(std::chrono::nanoseconds(window_start_ - now_ns()));
      window_timer_.async_wait([this](const error_code& ec) {
        if (!ec) window_bytes_start_ = total_bytes_in();
      });
    }
    if (window_end_ > 0) {
      stop_timer_.expires_after(std::chrono::nanoseconds(window_end_ - now_ns()));
      stop_timer_.async_wait([this](const error_code& ec) {
        if (!ec) stop();
      });
    }
    if (quota_ == 0 && cfg_.requests > 0) {  // this thread has no share of -n
      stop();
      return;
    }
    for (uint32_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].ready)
        fill(slots_[i]);
      else if (!slots_[i].conn)
        open(i);  // failed at the start: try again now
    }
    if (pacer_) pace();
  }

  bool may_issue_closed() const {
    if (phase_ != Phase::running) return false;
    return quota_ == 0 || issued_ < quota_;
  }

  // `fresh`: a new request (counted against -n), not a refused one sent again.
  void submit(Slot& s, int64_t intended, int64_t now, bool fresh = true) {
    ++s.inflight;
    ++inflight_;
    if (fresh && quota_ > 0 && intended >= window_start_) ++issued_;
    s.last_progress = s.inflight == 1 ? now : s.last_progress;
    s.conn->submit(uint64_t(intended));
  }

  // Refused requests waiting to be sent again go first.
  void resend(Slot& s, int64_t now) {
    while (!retry_.empty() && s.conn && s.conn->free_slots() > 0) {
      int64_t intended = retry_.front();
      retry_.pop_front();
      submit(s, intended, now, /*fresh=*/false);
    }
  }

  void fill(Slot& s) {
    if (!s.conn || !s.ready || phase_ != Phase::running) return;
    if (!retry_.empty()) resend(s, now_ns());
    if (pacer_) {
      int64_t now = now_ns();
      while (pacer_->backlog() > 0 && s.conn && s.conn->free_slots() > 0)
        submit(s, pacer_->take(), now);
      if (s.conn && s.conn->free_slots() > 0 && !s.listed) {
        s.listed = true;
        idle_.push_back(uint32_t(&s - slots_.data()));
      }
      return;
    }
    while (s.conn && s.conn->free_slots() > 0 && may_issue_closed()) {
      int64_t now = now_ns();
      submit(s, now, now);
    }
  }

  // Open loop: releases what is due into free slots and sleeps until the next due time.
  void pace() {
    if (phase_ != Phase::running) return;
    int64_t now = now_ns();
    pacer_->advance(now);
    while ((pacer_->backlog() > 0 || !retry_.empty()) && !idle_.empty()) {
      uint32_t idx = idle_.back();
      Slot& s = slots_[idx];
      if (!s.conn || !s.ready || s.conn->free_slots() == 0) {
        s.listed = false;
        idle_.pop_back();
        continue;
      }
      if (!retry_.empty()) {
        resend(s, now);
      } else {
        submit(s, pacer_->take(), now);
      }
    }
    int64_t next = pacer_->next_due();
    if (next == INT64_MAX) {
      if (pacer_->backlog() == 0 && retry_.empty() && inflight_ == 0) stop();
      return;
    }
    // One arm per wake-up: whatever falls due during the sleep goes out together next time.
    int64_t sleep = std::max(next - now_ns(), kMinPaceSleepNs);
    pace_timer_.expires_after(std::chrono::nanoseconds(sleep));
    pace_timer_.async_wait([this](const error_code& ec) {
      if (!ec) pace();
    });
  }

  void record(int64_t intended, const Completion& done, int64_t now, bool timed_out) {
    if (intended < window_start_) return;  // warm-up
    if (done.error != ErrorKind::none) {
      count_error(timed_out ? ErrorKind::timeout : done.error, "", now);
    } else {
      ++result_.requests;
      ++result_.status[done.status];
      result_.body_bytes += done.body_bytes;
      result_.latency_ns.record(uint64_t(std::max<int64_t>(now - intended, 0)));
      last_completion_ = std::max(last_completion_, now);
      if (progress_) progress_->requests.fetch_add(1, std::memory_order_relaxed);
    }
    maybe_stop_on_quota();
  }

  void count_error(ErrorKind kind, const std::string& detail, int64_t now) {
    if (phase_ == Phase::connecting || now < window_start_) return;
    ++result_.errors[size_t(kind)];
    // Every counted kind gets an example (the report promises one): the failure's own text, or
    // a generic one that a later, more precise text (on_closed) replaces.
    if (result_.error_example[size_t(kind)].empty()) {
      example_is_default_[size_t(kind)] = detail.empty();
      result_.error_example[size_t(kind)] = detail.empty() ? default_detail(kind) : detail;
    }
    if (progress_) progress_->errors.fetch_add(1, std::memory_order_relaxed);
  }

  void maybe_stop_on_quota() {
    if (quota_ == 0 || phase_ != Phase::running) return;
    if (issued_ >= quota_ && (!pacer_ || pacer_->backlog() == 0) && retry_.empty() &&
        inflight_ == 0)
      stop();
  }

  // Stop issuing; wait for what is in flight at most the request timeout, or not at all when
  // interrupted (those requests then count as not finished).
  void stop(bool interrupted = false) {
    if (phase_ != Phase::running) return;
    phase_ = Phase::draining;
    stopped_at_ = now_ns();
    // Interrupted before the planned end: the window ends now.
    if (window_end_ > 0) window_end_ = std::min(window_end_, std::max(stopped_at_, window_start_));
    pace_timer_.cancel();
    if (pacer_) result_.not_sent += pacer_->backlog();
    result_.not_sent += retry_.size();
    retry_.clear();
    // Still in the warm-up (the window timer has not fired): nothing was measured, so the
    // window's bytes start from everything received so far, not from zero.
    if (window_bytes_start_ < 0) window_bytes_start_ = cfg_.warmup_s > 0 ? total_bytes_in() : 0;
    window_bytes_end_ = total_bytes_in();
    if (interrupted) {
      result_.interrupted = true;
      result_.not_finished = inflight_;
      finish();
      return;
    }
    if (inflight_ == 0) {
      finish();
      return;
    }
    drain_deadline_ = now_ns() + to_ns(cfg_.timeout_s);
  }

  void finish() {
    if (phase_ == Phase::done) return;
    phase_ = Phase::done;
    finished_at_ = now_ns();
    if (stopped_at_ > 0) result_.drain_s = double(finished_at_ - stopped_at_) / 1e9;
    result_.bytes_in = total_bytes_in();
    result_.bytes_out = total_bytes_out();
    if (window_bytes_end_ < 0) window_bytes_end_ = int64_t(result_.bytes_in);
    result_.window_bytes_in =
        uint64_t(std::max<int64_t>(window_bytes_end_ - window_bytes_start_, 0));
    stop_timer_.cancel();
    pace_timer_.cancel();
    sweep_timer_.cancel();
    window_timer_.cancel();
    // The connections stay until the worker is destroyed: finish() may run inside one of
    // their events, where destroying the caller is not allowed.
    io_.stop();
  }

  uint64_t total_bytes_in() const {
    uint64_t n = retired_in_;
    for (const Slot& s : slots_) n += s.conn ? s.conn->bytes_in() : 0;
    return n;
  }
  uint64_t total_bytes_out() const {
    uint64_t n = retired_out_;
    for (const Slot& s : slots_) n += s.conn ? s.conn->bytes_out() : 0;
    return n;
  }

  // Request timeouts, checked a few times per timeout period: a connection with requests in
  // flight that made no progress (no completion) for the timeout is abandoned, and its
  // requests count as timeouts. Approximate for h2/h3, where one stuck stream among busy ones
  // is not caught; one timer per worker instead of one per request.
  void arm_sweep() {
    auto period = std::chrono::nanoseconds(
        std::clamp<int64_t>(to_ns(cfg_.timeout_s) / 4, 1'000'000, 100'000'000));
    sweep_timer_.expires_after(period);
    sweep_timer_.async_wait([this](const error_code& ec) {
      if (ec || phase_ == Phase::done) return;
      sweep();
      if (phase_ != Phase::done) arm_sweep();
    });
  }

  void sweep() {
    if (progress_ && progress_->stop_requested.load(std::memory_order_relaxed)) {
      if (phase_ == Phase::connecting) {
        result_.interrupted = true;
        finish();
        return;
      }
      if (phase_ == Phase::draining) {
        result_.interrupted = true;
        result_.not_finished = inflight_;
        finish();
      }
      if (phase_ == Phase::running) stop(/*interrupted=*/true);
      if (phase_ == Phase::done) return;
    }
    int64_t now = now_ns();
    int64_t limit = to_ns(cfg_.timeout_s);
    bool drain_over = phase_ == Phase::draining && now >= drain_deadline_;
    for (Slot& s : slots_) {
      if (!s.conn || s.timed_out) continue;
      bool stuck_connecting = !s.ready && !s.ever_ready && now - s.opened > limit;
      bool stuck_request = s.inflight > 0 && (now - s.last_progress > limit || drain_over);
      if (stuck_connecting || stuck_request) {
        s.timed_out = true;
        s.conn->shutdown(false);
      }
    }
    if (phase_ == Phase::connecting && now - started_ > limit) begin();
  }

  const LoadConfig& cfg_;
  uint32_t index_;
  uint64_t quota_;
  Progress* progress_;
  // One thread per io_context and nothing posted from outside: no locking inside Asio.
  asio::io_context io_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE};
  asio::steady_timer stop_timer_, pace_timer_, sweep_timer_, window_timer_;
  std::vector<Slot> slots_;
  std::vector<std::unique_ptr<Connection>> retired_;
  bool cleanup_posted_ = false;
  std::unordered_map<Connection*, uint32_t> by_conn_;
  std::vector<uint32_t> idle_;
  std::optional<OpenLoopPacer> pacer_;
  Phase phase_ = Phase::connecting;
  int64_t started_ = 0;
  int64_t window_start_ = INT64_MAX;
  int64_t window_end_ = 0;
  int64_t last_completion_ = 0;
  int64_t finished_at_ = 0;
  int64_t drain_deadline_ = INT64_MAX;
  int64_t stopped_at_ = 0;
  std::deque<int64_t> retry_;  // intended starts of refused requests, to send again
  std::array<bool, kErrorKinds> example_is_default_{};
  int64_t window_bytes_start_ = -1;
  int64_t window_bytes_end_ = -1;
  uint64_t issued_ = 0;
  uint64_t inflight_ = 0;
  uint64_t retired_in_ = 0;
  uint64_t retired_out_ = 0;
  LoadResult result_;
};

}  // namespace

LoadResult run_load(const LoadConfig& cfg, Progress* progress) {
  uint32_t threads = std::max<uint32_t>(cfg.threads, 1);
  std::vector<std::unique_ptr<Worker>> workers;
  for (uint32_t t = 0; t < threads; ++t) {
    uint32_t conns = cfg.connections / threads + (t < cfg.connections % threads ? 1 : 0);
    uint64_t quota = 0;
    if (cfg.requests > 0) quota = cfg.requests / threads + (t < cfg.requests % threads ? 1 : 0);
    workers.push_back(std::make_unique<Worker>(cfg, t, conns, quota, progress));
  }
  std::vector<std::thread> pool;
  for (auto& w : workers) pool.emplace_back([&w] { w->run(); });
  for (auto& th : pool) th.join();

  LoadResult total;
  int64_t start = INT64_MAX, end = 0;
  for (auto& w : workers) {
    LoadResult& r = w->result();
    total.latency_ns.merge(r.latency_ns);
    for (auto [code, n] : r.status) total.status[code] += n;
    for (size_t k = 0; k < kErrorKinds; ++k) {
      total.errors[k] += r.errors[k];
      if (total.error_example[k].empty()) total.error_example[k] = r.error_example[k];
    }
    total.requests += r.requests;
    total.reconnects += r.reconnects;
    total.bytes_in += r.bytes_in;
    total.bytes_out += r.bytes_out;
    total.window_bytes_in += r.window_bytes_in;
    total.body_bytes += r.body_bytes;
    total.not_sent += r.not_sent;
    total.retried += r.retried;
    total.not_finished += r.not_finished;
    total.interrupted = total.interrupted || r.interrupted;
    total.drain_s = std::max(total.drain_s, r.drain_s);
    if (w->measured()) {
      start = std::min(start, w->window_start());
      end = std::max(end, w->window_end());
    }
  }
  if (start != INT64_MAX && end > start) total.duration_s = double(end - start) / 1e9;
  return total;
}

}  // namespace hsp::bench
