// routekit token relay: a bounded multi-producer, single-consumer channel of text pieces.
//
// Plain C++17, no Python: bindings.cpp is the only file that knows about pybind11.
//
// Producers are the native decode loop (llama_native.cpp) and, later, HTTP stream readers;
// the consumer is a Stream / AsyncStream on the Python side. A piece is a run of generated
// text with its metadata: how many tokens it covers, a finish reason on the last piece of a
// producer, and the producer's id.
//
// Two modes:
//  - plain MPSC (race = false): every producer's pieces are delivered, in order per producer;
//    the stream ends when every attached producer has finished.
//  - first-piece race (race = true): the first producer to deliver a piece wins and every
//    other producer is cancelled (its pushes are refused from then on, and `cancelled()`
//    tells its loop to stop). A producer that fails before anyone won is set aside; when all
//    of them failed, their failures are delivered and the stream ends. This is hedging's shape.
//
// Deadlines (all optional, set once before consuming): the first piece, the longest silence
// between pieces once they flow (stall), and the total. A wait that hits one returns a
// distinct status; the relay itself stays open (the consumer decides what a timeout means).
//
// Thread safety: every method may be called from any thread. One consumer at a time (pop,
// try_pop and poll_async from two threads at once would each see a share of the pieces,
// which is allowed but not useful). Producers never block on finish(); push() blocks while
// the channel is full, until space frees, the producer is cancelled, or the relay closes.
//
// Async wake-ups: with notify = true the relay owns an eventfd (a pipe off Linux) that a
// push or finish writes to when the consumer armed it (poll_async found nothing to pop);
// an event loop watches it with add_reader and never blocks on the relay itself.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace routekit {

// Finish reasons carried by a producer's last piece. 0: the piece is not a last piece.
enum Finish : std::int32_t {
    kFinishNone = 0,
    kFinishStop = 1,         // end of generation or a stop sequence
    kFinishLength = 2,       // max_tokens or the context window
    kFinishCancelled = 3,    // the producer was cancelled (its text is not an answer)
    kFinishError = 4,        // text holds the error message
    kFinishContextFull = 5,  // the prompt does not fit; text holds "<prompt tokens> <n_ctx>"
};

// What a wait ended with.
enum PopStatus : int {
    kPopPieces = 0,         // one or more pieces were taken
    kPopEnd = 1,            // every producer finished and everything was taken
    kPopTimeoutFirst = 2,   // no first piece before the first-piece deadline
    kPopTimeoutStall = 3,   // pieces stopped for longer than the stall limit
    kPopTimeoutTotal = 4,   // the total deadline passed
    kPopClosed = 5,         // the consumer closed the relay
    kPopEmpty = 6,          // nothing yet (try_pop, a bounded wait that ran out, poll_async)
};

struct Piece {
    std::string text;
    std::int32_t tokens = 0;
    std::int32_t finish = kFinishNone;
    std::int32_t producer = -1;
};

class Relay {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr int kMaxProducers = 64;

    // capacity: pieces queued before push() blocks (>= 1). notify: own a wake-up fd.
    Relay(std::size_t capacity, bool race, bool notify);
    ~Relay();
    Relay(const Relay&) = delete;
    Relay& operator=(const Relay&) = delete;

    // A new producer id. Throws std::length_error past kMaxProducers, std::logic_error once
    // closed.
    int attach();

    // Producer side. push(): false when this producer may not deliver any more (cancelled,
    // lost the race, the relay is closed, or it is full past the total deadline): its loop
    // should stop and call finish().
    bool push(int producer, std::string text, std::int32_t tokens);
    // Never blocks: 1 queued (text moved from), 0 full (text untouched), -1 refused as push().
    int try_push(int producer, std::string& text, std::int32_t tokens);
    // Ends a producer: reason is one of Finish (non-zero); text is a last piece of text, or
    // the error message. Never blocks. Returns whether the piece will be delivered.
    bool finish(int producer, std::int32_t reason, std::string text, std::int32_t tokens);
    // Cheap (an atomic load): whether this producer should stop.
    bool cancelled(int producer) const;
    // For a piece whose latency matters (the first): waits until the consumer has taken
    // what it wants of the queue and come back for more (it waits in pop() again, or armed
    // the fd again), the relay closed, or this producer was cancelled; at most max_s
    // seconds. True when the consumer came back. A producer that computes again at once
    // (a decode step on every core) leaves the consumer it just woke no core: on a small
    // machine its first chunk then waits for the scheduler (~2 ms measured on the dev VM).
    bool wait_consumer_back(int producer, double max_s);

    // Either side. cancel(): this producer's further pieces are dropped. close(): the
    // consumer is done; nothing is delivered after it, producers see cancelled().
    void cancel(int producer);
    void close();
    bool closed() const { return closed_.load(std::memory_order_acquire); }

    // Relative seconds from now; a negative value means no such limit.
    void set_deadlines(double first_piece_s, double stall_s, double total_s);

    // Consumer side: takes up to max pieces into out (cleared first). pop() waits for at
    // least min_pieces pieces (or a last piece, the end, a deadline, or wait_s seconds;
    // negative: no bound of its own). A consumer that only wants the whole answer sets
    // min_pieces high and is woken a few times per answer instead of once per token: every
    // wake-up costs a context switch.
    PopStatus pop(std::vector<Piece>& out, std::size_t max, double wait_s,
                  std::size_t min_pieces = 1);
    PopStatus try_pop(std::vector<Piece>& out, std::size_t max, std::size_t min_pieces = 1);
    // try_pop(), and when it finds nothing to take, arms the wake-up fd; wait_s receives the
    // seconds until the nearest deadline (negative: none). Only with notify = true.
    PopStatus poll_async(std::vector<Piece>& out, std::size_t max, double& wait_s,
                         std::size_t min_pieces = 1);
    // Arms the wake-up fd for the end of every producer; true (nothing armed) when they all
    // finished already. For a consumer that stopped reading and waits for its producers to
    // let go. Only with notify = true.
    bool arm_end();
    // Takes whatever is queued, whatever the deadlines say (a consumer that gave up
    // collecting what was produced before it did). Never waits.
    void take_all(std::vector<Piece>& out);
    // The fd an event loop watches (readable after a wake-up), or -1 without notify.
    int fd() const { return read_fd_; }
    // Empties the fd after a wake-up (never blocks).
    void drain_fd() const;

    int winner() const;
    std::size_t size() const;
    bool received_any() const;

private:
    struct Producer {
        std::atomic<bool> cancelled{false};
        bool finished = false;
        bool failed = false;  // race mode: finished with an error before anyone won
    };

    bool deliverable_locked(int producer);
    void enqueue_locked(Piece&& piece);
    void wake_consumer_locked();
    bool ready_locked() const;
    PopStatus take_locked(std::vector<Piece>& out, std::size_t max, std::size_t min_pieces);
    PopStatus check_deadlines_locked(Clock::time_point now, Clock::time_point* next) const;
    void check_producer(int producer) const;

    const std::size_t capacity_;
    const bool race_;

    mutable std::mutex mu_;
    std::condition_variable not_empty_;
    std::condition_variable not_full_;
    std::condition_variable back_;  // wait_consumer_back()
    // Ring buffer; may hold capacity_ + kMaxProducers pieces (finish() never blocks).
    std::vector<Piece> ring_;
    std::size_t head_ = 0;
    std::size_t count_ = 0;
    Producer producers_[kMaxProducers];
    int attached_ = 0;
    int live_ = 0;
    int winner_ = -1;
    std::vector<Piece> failures_;  // race mode: held until every producer has failed
    bool consumer_waiting_ = false;
    std::size_t wake_min_ = 1;      // what the waiting consumer waits for
    std::size_t finishes_queued_ = 0;
    int producers_waiting_ = 0;
    int back_waiters_ = 0;
    bool armed_ = false;
    bool got_first_ = false;
    Clock::time_point last_piece_{};
    bool has_first_deadline_ = false;
    bool has_stall_ = false;
    bool has_total_ = false;
    Clock::time_point first_deadline_{};
    Clock::duration stall_{};
    Clock::time_point total_deadline_{};
    std::atomic<bool> closed_{false};
    int read_fd_ = -1;
    int write_fd_ = -1;
};

// A producer on its own C++ thread that pushes n pieces of text, then finishes with reason.
// For tests and benchmarks: what the relay costs without Python on the producer side.
void spawn_test_producer(std::shared_ptr<Relay> relay, int producer, std::size_t n,
                         std::string text, std::int32_t reason);

}  // namespace routekit
