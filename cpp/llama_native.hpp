// routekit native llama.cpp decode loop: tokenize -> decode -> sample -> detokenize on a C++
// thread, pieces pushed into a Relay. No Python anywhere on that thread.
//
// Plain C++17, no Python, no llama.cpp headers: the few llama.cpp structs and functions used
// are declared below and resolved at run time (dlopen(RTLD_NOLOAD) + dlsym) from the
// libllama that llama-cpp-python already loaded, so there is one copy of llama.cpp in the
// process. Before first use, Api::open() compares what is declared here with llama-cpp-python's
// own ctypes declarations (struct sizes and field offsets, function signatures) and the
// versions, and refuses with an AbiError naming them on any mismatch.
//
// Models and contexts are created by llama-cpp-python (its loading, GPU offload, parameters);
// their raw handles come here. A NativeContext owns one worker thread that runs one job at a
// time on its context, and remembers which tokens the context's KV cache holds, so a prompt
// that extends the previous one decodes only its new suffix.
//
// Thread safety: Api is immutable after open(). NativeContext: submit() and close() from any
// thread; jobs run one at a time on its worker, in submission order. Job: every accessor is
// thread-safe. The log sink (install_log_sink / drain_logs) is safe from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "relay.hpp"

namespace routekit {
namespace llama {

// ---- the part of llama.h that is used (layouts checked at run time, see Api::open) ----------
using token_t = std::int32_t;
using pos_t = std::int32_t;
using seq_id_t = std::int32_t;

struct batch_t {  // struct llama_batch, passed by value to llama_decode
    std::int32_t n_tokens;
    token_t* token;
    float* embd;
    pos_t* pos;
    std::int32_t* n_seq_id;
    seq_id_t** seq_id;
    std::int8_t* logits;
};

struct sampler_chain_params_t {  // struct llama_sampler_chain_params, passed by value
    bool no_perf;
};

// A struct as llama-cpp-python's ctypes declares it: size and (name, offset, size) per field.
struct FieldLayout {
    std::string name;
    std::size_t offset;
    std::size_t size;
};
struct StructLayout {
    std::string name;
    std::size_t size;
    std::vector<FieldLayout> fields;
};
// A function signature in a tiny notation both sides can write: "ret(arg,arg)" with v void,
// b bool, i32/u32/u64 integers, f32 float, p any pointer, S:<name> a struct by value.
struct Signature {
    std::string name;
    std::string signature;
};

class AbiError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The versions this file was checked against (llama-cpp-python, and libllama's llama_version()).
extern const char* const kVerifiedBindings[];
extern const char* const kVerifiedLibrary[];

class Api {
public:
    // Opens the already-loaded library at lib_path and checks it. bindings_version is
    // llama_cpp.__version__; layouts and signatures are what its ctypes module declares.
    // allow_untested: accept other versions when every layout and signature matches.
    static std::shared_ptr<Api> open(const std::string& lib_path,
                                           const std::string& bindings_version,
                                           const std::vector<StructLayout>& layouts,
                                           const std::vector<Signature>& signatures,
                                           bool allow_untested);
    // What this file declares; the Python side describes the same names from ctypes.
    static std::vector<StructLayout> declared_layouts();
    static std::vector<Signature> declared_signatures();

    std::string library_version;
    std::string bindings_version;

    // Resolved entry points (C ABI).
    const char* (*version)() = nullptr;
    const void* (*model_get_vocab)(const void* model) = nullptr;
    std::int32_t (*vocab_n_tokens)(const void* vocab) = nullptr;
    bool (*vocab_is_eog)(const void* vocab, token_t token) = nullptr;
    std::int32_t (*tokenize)(const void* vocab, const char* text, std::int32_t text_len,
                             token_t* tokens, std::int32_t n_tokens_max, bool add_special,
                             bool parse_special) = nullptr;
    std::int32_t (*token_to_piece)(const void* vocab, token_t token, char* buf,
                                   std::int32_t length, std::int32_t lstrip,
                                   bool special) = nullptr;
    std::uint32_t (*n_ctx)(const void* ctx) = nullptr;
    std::uint32_t (*n_batch)(const void* ctx) = nullptr;
    void* (*get_memory)(const void* ctx) = nullptr;
    bool (*memory_seq_rm)(void* mem, seq_id_t seq, pos_t p0, pos_t p1) = nullptr;
    void (*memory_clear)(void* mem, bool data) = nullptr;
    std::int32_t (*decode)(void* ctx, batch_t batch) = nullptr;
    // ggml_abort_callback: asked between graph nodes (CPU backend) whether to stop decoding.
    void (*set_abort_callback)(void* ctx, bool (*callback)(void* data), void* data) = nullptr;
    sampler_chain_params_t (*sampler_chain_default_params)() = nullptr;
    void* (*sampler_chain_init)(sampler_chain_params_t params) = nullptr;
    void (*sampler_chain_add)(void* chain, void* smpl) = nullptr;
    void* (*sampler_init_greedy)() = nullptr;
    void* (*sampler_init_dist)(std::uint32_t seed) = nullptr;
    void* (*sampler_init_top_k)(std::int32_t k) = nullptr;
    void* (*sampler_init_top_p)(float p, std::size_t min_keep) = nullptr;
    void* (*sampler_init_min_p)(float p, std::size_t min_keep) = nullptr;
    void* (*sampler_init_typical)(float p, std::size_t min_keep) = nullptr;
    void* (*sampler_init_temp)(float t) = nullptr;
    void* (*sampler_init_penalties)(std::int32_t n_vocab, std::int32_t last_n, float repeat,
                                    float freq, float present) = nullptr;
    token_t (*sampler_sample)(void* smpl, void* ctx, std::int32_t idx) = nullptr;
    void (*sampler_free)(void* smpl) = nullptr;

private:
    void* handle_ = nullptr;
};

// Compares declared layouts/signatures with theirs; returns one line per mismatch.
std::vector<std::string> compare_abi(const std::vector<StructLayout>& theirs,
                                     const std::vector<Signature>& their_signatures);

// ---- generated text -> pieces -----------------------------------------------------------------
// Assembles one request's output, token by token, and decides what may be sent: never half a
// UTF-8 character, never bytes that may turn out to start a stop sequence. Stop sequences
// follow llama-cpp-python's rule: after each token, the first listed stop that occurs in the
// text ends it where that stop starts. Plain data, no llama.cpp: testable on its own.
class TextAssembler {
public:
    explicit TextAssembler(std::vector<std::string> stops);
    // Appends one token's bytes; true when a stop sequence now ends the text (text() is cut).
    bool add(const std::string& piece);
    // The bytes that are safe to send now (possibly empty); they count as sent.
    std::string take_safe();
    // Everything not yet sent (at the end of generation).
    std::string take_rest();
    const std::string& text() const { return text_; }

private:
    std::vector<std::string> stops_;
    std::string text_;
    std::size_t sent_ = 0;
};

// ---- one request ------------------------------------------------------------------------------

struct Sampling {
    float temperature = 0.8f;  // < 0: sample from the raw distribution; 0: greedy
    float top_p = 0.95f;
    std::int32_t top_k = 40;
    float min_p = 0.05f;
    float typical_p = 1.0f;
    float repeat_penalty = 1.0f;
    float frequency_penalty = 0.0f;
    float presence_penalty = 0.0f;
    std::int32_t penalty_last_n = 64;
    std::uint32_t seed = 0xFFFFFFFFu;
};

struct Request {
    std::vector<token_t> prompt_tokens;  // used when non-empty; else prompt_text is tokenized
    std::string prompt_text;
    bool add_special = true;
    bool parse_special = true;
    std::int32_t max_tokens = 0;  // <= 0: up to the context window
    Sampling sampling;
    std::vector<std::string> stops;  // UTF-8 stop sequences
};

// A job's outcome and progress. Filled by the worker; read from any thread.
class Job {
public:
    Job(std::shared_ptr<Relay> relay, int producer) : relay_(std::move(relay)), producer_(producer) {}

    // Stops the job before its next token; its pieces (and last piece) are dropped, which
    // also frees a worker waiting on a full relay.
    void cancel() {
        cancel_.store(true, std::memory_order_release);
        relay_->cancel(producer_);
    }
    bool cancel_requested() const {
        return cancel_.load(std::memory_order_acquire) || relay_->cancelled(producer_);
    }
    // Waits until the worker is done with the context (seconds; negative: forever).
    bool wait(double timeout_s);
    bool done() const;

    std::int32_t prompt_tokens() const { return prompt_tokens_.load(); }
    std::int32_t reused_tokens() const { return reused_tokens_.load(); }
    std::int32_t completion_tokens() const { return completion_tokens_.load(); }
    std::int32_t finish() const { return finish_.load(); }
    // Seconds from the worker taking the job to its first sampled token, and from the first
    // to the last (measured on the worker: what the decode loop did, whoever consumes).
    double seconds_to_first_token() const { return to_first_.load(); }
    double seconds_decoding() const { return decoding_.load(); }
    std::string error() const;
    int producer() const { return producer_; }
    const std::shared_ptr<Relay>& relay() const { return relay_; }

private:
    friend class NativeContext;
    void complete(std::int32_t finish, std::string error);

    std::shared_ptr<Relay> relay_;
    const int producer_;
    std::atomic<bool> cancel_{false};
    std::atomic<std::int32_t> prompt_tokens_{0};
    std::atomic<std::int32_t> reused_tokens_{0};
    std::atomic<std::int32_t> completion_tokens_{0};
    std::atomic<std::int32_t> finish_{kFinishNone};
    std::atomic<double> to_first_{0.0};
    std::atomic<double> decoding_{0.0};
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
    std::string error_;
};

class NativeContext {
public:
    // model / ctx: llama-cpp-python's raw handles (llm._model.model, llm._ctx.ctx). They must
    // outlive this object: close() (or the destructor) returns only once the worker let go.
    NativeContext(std::shared_ptr<const Api> api, void* model, void* ctx);
    ~NativeContext();
    NativeContext(const NativeContext&) = delete;
    NativeContext& operator=(const NativeContext&) = delete;

    // Queues a request; its pieces go to relay as `producer`. Throws std::logic_error once
    // closed.
    std::shared_ptr<Job> submit(Request request, std::shared_ptr<Relay> relay, int producer);
    // Cancels every job, waits for the worker to stop. Idempotent.
    void close();

    std::uint32_t n_ctx() const { return n_ctx_; }
    std::uint32_t n_batch() const { return n_batch_; }
    // Tokens the KV cache holds (sequence 0), for tests.
    std::vector<token_t> cached_tokens() const;
    // Forget the KV cache (e.g. after someone else used the context).
    void invalidate_cache();
    // Take tokens as what the KV cache holds at positions 0.. of sequence 0: someone else
    // decoded them into this context (llama-cpp-python, sharing it), so a prompt that extends
    // them decodes only its suffix; what the cache holds past them is removed. Between jobs
    // only; at most n_ctx tokens.
    void adopt_cache(const std::vector<token_t>& tokens);
    // Tokenizes text as the worker would (for prompt-length checks and tests).
    std::vector<token_t> tokenize(const std::string& text, bool add_special,
                                  bool parse_special) const;
    std::string token_piece(token_t token) const;

private:
    struct Pending {
        Request request;
        std::shared_ptr<Job> job;
    };
    void worker();
    void run(Request& request, Job& job);
    // Decodes tokens [from, to) of `tokens` at positions from..; logits for the last one.
    int decode_range(const std::vector<token_t>& tokens, std::size_t from, std::size_t to,
                     Job& job);
    // The context's abort callback: true once the job being decoded is cancelled, so a
    // long prompt batch stops at its next graph node instead of running to its end. Its
    // data is an AbortCell, not this object: llama-cpp-python owns the context and may
    // free it before or after this object goes, so neither may point at the other once
    // one is gone. The cell (one pointer) is left behind on purpose when this object is
    // destroyed: the context, if it lives on, still reads it (and finds no job).
    struct AbortCell {
        std::atomic<const Job*> decoding{nullptr};  // the job inside api_->decode, if any
    };
    static bool abort_decode(void* cell);
    void* make_sampler(const Sampling& s) const;

    std::shared_ptr<const Api> api_;
    void* model_;
    void* ctx_;
    AbortCell* abort_cell_ = new AbortCell();  // never freed: see abort_decode
    const void* vocab_;
    void* memory_;
    std::uint32_t n_ctx_;
    std::uint32_t n_batch_;
    std::int32_t n_vocab_;

    // batch storage (n_batch_ entries)
    std::vector<token_t> b_token_;
    std::vector<pos_t> b_pos_;
    std::vector<std::int32_t> b_n_seq_;
    std::vector<seq_id_t> b_seq_storage_;
    std::vector<seq_id_t*> b_seq_;
    std::vector<std::int8_t> b_logits_;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Pending> queue_;
    std::shared_ptr<Job> running_;
    bool closing_ = false;
    std::mutex join_mu_;
    std::thread thread_;
    // Tokens in the KV cache, guarded by cache_mu_ (written by the worker, and between jobs
    // by invalidate_cache / adopt_cache). Until cache_known_, the context may hold what
    // llama-cpp-python decoded: the first job clears it (not the constructor, which may run
    // while llama-cpp-python decodes on the same context).
    mutable std::mutex cache_mu_;
    std::vector<token_t> cache_;
    bool cache_known_ = false;
};

// ---- llama.cpp's log lines, kept in C++ ----------------------------------------------------
// Installs a C log callback through llama_log_set in the already-loaded library: llama.cpp
// then never calls into Python to log (it logs from loader and decode threads, the native
// worker included, and during interpreter shutdown). Lines wait in a bounded buffer until
// drain_logs(). Returns false when the symbol is missing.
bool install_log_sink(const std::string& lib_path);
// (level, line) pairs in arrival order, the trailing newline removed; `dropped` receives how
// many lines the bounded buffer lost since the previous drain.
std::vector<std::pair<int, std::string>> drain_logs(std::size_t& dropped);
bool logs_pending();

}  // namespace llama
}  // namespace routekit
