// The token relay: see relay.hpp for what it promises.
#include "relay.hpp"

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <thread>
#include <utility>

#if defined(__linux__)
#include <sys/eventfd.h>
#include <unistd.h>
#elif !defined(_WIN32)
#include <fcntl.h>
#include <unistd.h>
#endif

namespace routekit {

namespace {

Relay::Clock::duration seconds(double s) {
    return std::chrono::duration_cast<Relay::Clock::duration>(std::chrono::duration<double>(s));
}

bool is_failure(std::int32_t reason) {
    return reason == kFinishError || reason == kFinishContextFull || reason == kFinishCancelled;
}

}  // namespace

Relay::Relay(std::size_t capacity, bool race, bool notify)
    : capacity_(capacity < 1 ? 1 : capacity), race_(race) {
    // finish() never blocks, so every producer may add one piece past the bound.
    ring_.resize(capacity_ + kMaxProducers);
    if (!notify) return;
#if defined(__linux__)
    read_fd_ = write_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (read_fd_ < 0) throw std::runtime_error("eventfd() failed");
#elif !defined(_WIN32)
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe() failed");
    for (int fd : fds) {
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    read_fd_ = fds[0];
    write_fd_ = fds[1];
#else
    throw std::runtime_error("relay wake-up fds are not supported on this platform");
#endif
}

Relay::~Relay() {
#if !defined(_WIN32)
    if (read_fd_ >= 0) ::close(read_fd_);
    if (write_fd_ >= 0 && write_fd_ != read_fd_) ::close(write_fd_);
#endif
}

void Relay::check_producer(int producer) const {
    if (producer < 0 || producer >= kMaxProducers) throw std::out_of_range("unknown producer");
}

int Relay::attach() {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed()) throw std::logic_error("relay is closed");
    if (attached_ >= kMaxProducers) throw std::length_error("too many producers");
    const int id = attached_++;
    ++live_;
    // A producer that joins a race already decided has lost it.
    if (race_ && winner_ >= 0) producers_[id].cancelled.store(true, std::memory_order_release);
    return id;
}

bool Relay::cancelled(int producer) const {
    check_producer(producer);
    return producers_[producer].cancelled.load(std::memory_order_acquire) || closed();
}

bool Relay::deliverable_locked(int producer) {
    if (closed() || producers_[producer].cancelled.load(std::memory_order_relaxed)) return false;
    if (!race_ || winner_ < 0 || winner_ == producer) return true;
    producers_[producer].cancelled.store(true, std::memory_order_release);
    return false;
}

void Relay::enqueue_locked(Piece&& piece) {
    if (race_ && winner_ < 0) {
        // First delivery wins the race: everyone else stops at their next check.
        winner_ = piece.producer;
        for (int i = 0; i < attached_; ++i)
            if (i != winner_) producers_[i].cancelled.store(true, std::memory_order_release);
        if (producers_waiting_) not_full_.notify_all();
    }
    if (piece.finish != kFinishNone) ++finishes_queued_;
    ring_[(head_ + count_) % ring_.size()] = std::move(piece);
    ++count_;
    got_first_ = true;
    last_piece_ = Clock::now();
    wake_consumer_locked();
}

bool Relay::ready_locked() const {
    return count_ >= wake_min_ || finishes_queued_ > 0 || (attached_ > 0 && live_ == 0) ||
           closed();
}

void Relay::wake_consumer_locked() {
    if (!ready_locked()) return;  // the consumer asked to sleep until more has arrived
    if (consumer_waiting_) not_empty_.notify_one();
    if (armed_) {
        armed_ = false;
#if defined(__linux__)
        const std::uint64_t one = 1;
        ssize_t r = ::write(write_fd_, &one, sizeof one);
        (void)r;  // EAGAIN only when the counter is saturated: the fd is readable anyway
#elif !defined(_WIN32)
        const char one = 1;
        ssize_t r = ::write(write_fd_, &one, 1);
        (void)r;  // a full pipe is a readable pipe
#endif
    }
}

void Relay::drain_fd() const {
#if defined(__linux__)
    std::uint64_t value;
    ssize_t r = ::read(read_fd_, &value, sizeof value);
    (void)r;
#elif !defined(_WIN32)
    char buf[64];
    while (::read(read_fd_, buf, sizeof buf) > 0) {
    }
#endif
}

bool Relay::push(int producer, std::string text, std::int32_t tokens) {
    check_producer(producer);
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
        if (producers_[producer].finished) throw std::logic_error("push() after finish()");
        if (!deliverable_locked(producer)) return false;
        if (count_ < capacity_) break;
        // Past the total deadline nobody is waiting for this text: a consumer that stopped
        // reading must not hold the producer (and the model behind it) forever.
        if (has_total_ && Clock::now() >= total_deadline_) return false;
        ++producers_waiting_;
        if (has_total_) not_full_.wait_until(lock, total_deadline_);
        else not_full_.wait(lock);
        --producers_waiting_;
    }
    enqueue_locked(Piece{std::move(text), tokens, kFinishNone, producer});
    return true;
}

int Relay::try_push(int producer, std::string& text, std::int32_t tokens) {
    check_producer(producer);
    std::lock_guard<std::mutex> lock(mu_);
    if (producers_[producer].finished) throw std::logic_error("push() after finish()");
    if (!deliverable_locked(producer)) return -1;
    if (count_ >= capacity_) return 0;
    enqueue_locked(Piece{std::move(text), tokens, kFinishNone, producer});
    return 1;
}

bool Relay::finish(int producer, std::int32_t reason, std::string text, std::int32_t tokens) {
    check_producer(producer);
    if (reason == kFinishNone) throw std::invalid_argument("finish() needs a reason");
    std::lock_guard<std::mutex> lock(mu_);
    Producer& p = producers_[producer];
    if (p.finished) return false;
    p.finished = true;
    --live_;
    Piece piece{std::move(text), tokens, reason, producer};
    bool deliver = false;
    if (closed() || p.cancelled.load(std::memory_order_relaxed)) {
        deliver = false;
    } else if (!race_ || winner_ == producer) {
        deliver = true;
    } else if (winner_ < 0) {
        if (is_failure(reason)) {
            // Not an answer: the race goes on without it, unless nobody is left.
            p.failed = true;
            failures_.push_back(std::move(piece));
        } else {
            deliver = true;  // an empty but complete answer wins too
        }
    }
    if (deliver) enqueue_locked(std::move(piece));
    if (race_ && winner_ < 0 && live_ == 0 && !closed()) {
        for (Piece& f : failures_) {
            ring_[(head_ + count_) % ring_.size()] = std::move(f);
            ++count_;
            ++finishes_queued_;
        }
        failures_.clear();
    }
    if (live_ == 0) wake_consumer_locked();
    return deliver;
}

void Relay::cancel(int producer) {
    check_producer(producer);
    std::lock_guard<std::mutex> lock(mu_);
    producers_[producer].cancelled.store(true, std::memory_order_release);
    if (producers_waiting_) not_full_.notify_all();
    if (back_waiters_) back_.notify_all();
}

bool Relay::wait_consumer_back(int producer, double max_s) {
    check_producer(producer);
    std::unique_lock<std::mutex> lock(mu_);
    auto back = [&] {
        return (consumer_waiting_ || armed_) && count_ < wake_min_;
    };
    auto over = [&] {
        return closed() || producers_[producer].cancelled.load(std::memory_order_relaxed);
    };
    ++back_waiters_;
    back_.wait_until(lock, Clock::now() + seconds(std::max(0.0, max_s)),
                     [&] { return back() || over(); });
    --back_waiters_;
    return back() && !over();
}

void Relay::close() {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed()) return;
    closed_.store(true, std::memory_order_release);
    for (std::size_t i = 0; i < count_; ++i) ring_[(head_ + i) % ring_.size()] = Piece{};
    count_ = 0;
    finishes_queued_ = 0;
    failures_.clear();
    not_full_.notify_all();
    not_empty_.notify_all();
    back_.notify_all();
    wake_consumer_locked();
}

void Relay::set_deadlines(double first_piece_s, double stall_s, double total_s) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    has_first_deadline_ = first_piece_s >= 0;
    if (has_first_deadline_) first_deadline_ = now + seconds(first_piece_s);
    has_stall_ = stall_s >= 0;
    if (has_stall_) stall_ = seconds(stall_s);
    has_total_ = total_s >= 0;
    if (has_total_) total_deadline_ = now + seconds(total_s);
}

PopStatus Relay::take_locked(std::vector<Piece>& out, std::size_t max,
                              std::size_t min_pieces) {
    out.clear();
    if (closed()) return kPopClosed;
    const std::size_t n = std::min(max, count_);
    // Fewer than asked for: wait for more, unless nothing more can come (a last piece is
    // queued, or the relay is full and its producers wait for room).
    const bool enough = count_ >= min_pieces || finishes_queued_ > 0 || count_ >= capacity_ ||
                        (attached_ > 0 && live_ == 0);
    if (n > 0 && enough) {
        out.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
            if (ring_[head_].finish != kFinishNone) --finishes_queued_;
            out.push_back(std::move(ring_[head_]));
            head_ = (head_ + 1) % ring_.size();
        }
        count_ -= n;
        if (producers_waiting_) {
            if (n == 1) not_full_.notify_one();
            else not_full_.notify_all();
        }
        return kPopPieces;
    }
    if (attached_ > 0 && live_ == 0) return kPopEnd;
    return kPopEmpty;
}

PopStatus Relay::check_deadlines_locked(Clock::time_point now, Clock::time_point* next) const {
    Clock::time_point soonest = Clock::time_point::max();
    if (!got_first_ && has_first_deadline_) {
        if (now >= first_deadline_) return kPopTimeoutFirst;
        soonest = std::min(soonest, first_deadline_);
    }
    if (got_first_ && has_stall_) {
        const auto stalled = last_piece_ + stall_;
        if (now >= stalled) return kPopTimeoutStall;
        soonest = std::min(soonest, stalled);
    }
    if (has_total_) {
        if (now >= total_deadline_) return kPopTimeoutTotal;
        soonest = std::min(soonest, total_deadline_);
    }
    if (next != nullptr) *next = soonest;
    return kPopEmpty;
}

PopStatus Relay::pop(std::vector<Piece>& out, std::size_t max, double wait_s,
                     std::size_t min_pieces) {
    std::unique_lock<std::mutex> lock(mu_);
    wake_min_ = std::max<std::size_t>(1, std::min(min_pieces, capacity_));
    const auto start = Clock::now();
    const auto until = wait_s >= 0 ? start + seconds(wait_s) : Clock::time_point::max();
    for (;;) {
        const auto now = Clock::now();
        // The total deadline stops a consumer that never runs dry (a fast producer) too.
        if (has_total_ && now >= total_deadline_ && !closed()) {
            out.clear();
            return kPopTimeoutTotal;
        }
        PopStatus st = take_locked(out, max, wake_min_);
        if (st != kPopEmpty) return st;
        Clock::time_point next;
        st = check_deadlines_locked(now, &next);
        if (st != kPopEmpty) return st;
        if (now >= until) return kPopEmpty;
        const auto wake = std::min(next, until);
        consumer_waiting_ = true;
        if (back_waiters_) back_.notify_all();
        if (wake == Clock::time_point::max()) not_empty_.wait(lock);
        else not_empty_.wait_until(lock, wake);
        consumer_waiting_ = false;
    }
}

PopStatus Relay::try_pop(std::vector<Piece>& out, std::size_t max, std::size_t min_pieces) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    if (has_total_ && now >= total_deadline_ && !closed()) {
        out.clear();
        return kPopTimeoutTotal;
    }
    PopStatus st = take_locked(out, max, std::max<std::size_t>(1, min_pieces));
    if (st != kPopEmpty) return st;
    return check_deadlines_locked(now, nullptr);
}

PopStatus Relay::poll_async(std::vector<Piece>& out, std::size_t max, double& wait_s,
                            std::size_t min_pieces) {
    if (read_fd_ < 0) throw std::logic_error("relay was made without notify");
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    wait_s = -1.0;
    if (has_total_ && now >= total_deadline_ && !closed()) {
        out.clear();
        return kPopTimeoutTotal;
    }
    wake_min_ = std::max<std::size_t>(1, std::min(min_pieces, capacity_));
    PopStatus st = take_locked(out, max, wake_min_);
    if (st != kPopEmpty) return st;
    Clock::time_point next;
    st = check_deadlines_locked(now, &next);
    if (st != kPopEmpty) return st;
    armed_ = true;
    if (back_waiters_) back_.notify_all();
    if (next != Clock::time_point::max())
        wait_s = std::chrono::duration<double>(next - now).count();
    return kPopEmpty;
}

bool Relay::arm_end() {
    if (read_fd_ < 0) throw std::logic_error("relay was made without notify");
    std::lock_guard<std::mutex> lock(mu_);
    if (attached_ > 0 && live_ == 0) return true;
    armed_ = true;
    // ready_locked() holds once live_ reaches 0, whatever wake_min_ says.
    wake_min_ = capacity_ + kMaxProducers + 1;
    return false;
}

void Relay::take_all(std::vector<Piece>& out) {
    std::lock_guard<std::mutex> lock(mu_);
    out.clear();
    while (count_ > 0) {
        if (ring_[head_].finish != kFinishNone) --finishes_queued_;
        out.push_back(std::move(ring_[head_]));
        head_ = (head_ + 1) % ring_.size();
        --count_;
    }
    if (producers_waiting_) not_full_.notify_all();
}

int Relay::winner() const {
    std::lock_guard<std::mutex> lock(mu_);
    return winner_;
}

std::size_t Relay::size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
}

bool Relay::received_any() const {
    std::lock_guard<std::mutex> lock(mu_);
    return got_first_;
}

void spawn_test_producer(std::shared_ptr<Relay> relay, int producer, std::size_t n,
                         std::string text, std::int32_t reason) {
    std::thread([relay = std::move(relay), producer, n, text = std::move(text), reason] {
        std::size_t i = 0;
        for (; i < n; ++i)
            if (!relay->push(producer, text, 1)) break;
        relay->finish(producer, i == n ? reason : kFinishCancelled, std::string(), 0);
    }).detach();
}

}  // namespace routekit
