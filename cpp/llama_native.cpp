// The native decode loop and its run-time binding to libllama: see llama_native.hpp.
#include "llama_native.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <sstream>

#if !defined(_WIN32)
#include <dlfcn.h>
#endif

namespace routekit {
namespace llama {

// Checked by hand against llama-cpp-python 0.3.36's llama_cpp.py and the llama.h it vendors
// (site-packages/include/llama.h); libllama reports "0.5.0-dev" from llama_version().
const char* const kVerifiedBindings[] = {"0.3.36", nullptr};
const char* const kVerifiedLibrary[] = {"0.5.0-dev", nullptr};

namespace {

bool listed(const char* const* list, const std::string& v) {
    for (; *list != nullptr; ++list)
        if (v == *list) return true;
    return false;
}

std::string joined(const char* const* list) {
    std::string out;
    for (; *list != nullptr; ++list) out += (out.empty() ? "" : ", ") + std::string(*list);
    return out;
}

#define RK_FIELD(T, f) FieldLayout{#f, offsetof(T, f), sizeof(static_cast<T*>(nullptr)->f)}

template <typename Fn>
void resolve(void* handle, const char* name, Fn& out, std::vector<std::string>& missing) {
#if !defined(_WIN32)
    void* sym = ::dlsym(handle, name);
#else
    void* sym = nullptr;
#endif
    if (sym == nullptr) {
        missing.push_back(name);
        return;
    }
    out = reinterpret_cast<Fn>(sym);
}

// Length of the longest prefix of s that does not end inside a UTF-8 sequence.
std::size_t utf8_complete(const std::string& s) {
    const std::size_t n = s.size();
    for (std::size_t back = 1; back <= 4 && back <= n; ++back) {
        const auto c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // a continuation byte: keep looking for the lead
        std::size_t need = 1;
        if (c >= 0xF0) need = 4;
        else if (c >= 0xE0) need = 3;
        else if (c >= 0xC0) need = 2;
        return back < need ? n - back : n;
    }
    return n;  // stray continuation bytes: not ours to repair (the consumer drops them)
}

}  // namespace

// ---- TextAssembler ------------------------------------------------------------------------

TextAssembler::TextAssembler(std::vector<std::string> stops) : stops_(std::move(stops)) {
    // An empty stop would match everywhere; the Python side never sends one.
    stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

bool TextAssembler::add(const std::string& piece) {
    const std::size_t before = text_.size();
    text_ += piece;
    // Only a match that ends in the new bytes can be new: earlier ones ended the text before.
    // One piece may complete two stops: cut at the earliest, whichever is listed first.
    std::size_t cut = std::string::npos;
    for (const std::string& s : stops_) {
        const std::size_t from = before + 1 >= s.size() ? before + 1 - s.size() : 0;
        const std::size_t at = text_.find(s, from);
        if (at < cut) cut = at;
    }
    if (cut == std::string::npos) return false;
    text_.resize(cut);
    return true;
}

std::string TextAssembler::take_safe() {
    // Hold back the longest unsent suffix that is a proper prefix of a stop sequence.
    std::size_t hold = 0;
    const std::size_t unsent = text_.size() - sent_;
    for (const std::string& s : stops_) {
        for (std::size_t k = std::min(s.size() - 1, unsent); k > hold; --k) {
            if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
                hold = k;
                break;
            }
        }
    }
    const std::size_t safe = std::min(text_.size() - hold, utf8_complete(text_));
    if (safe <= sent_) return std::string();
    std::string out = text_.substr(sent_, safe - sent_);
    sent_ = safe;
    return out;
}

std::string TextAssembler::take_rest() {
    std::string out = sent_ < text_.size() ? text_.substr(sent_) : std::string();
    sent_ = text_.size();
    return out;
}

// ---- ABI ----------------------------------------------------------------------------------

std::vector<StructLayout> Api::declared_layouts() {
    return {
        StructLayout{"llama_batch", sizeof(batch_t),
                     {RK_FIELD(batch_t, n_tokens), RK_FIELD(batch_t, token),
                      RK_FIELD(batch_t, embd), RK_FIELD(batch_t, pos),
                      RK_FIELD(batch_t, n_seq_id), RK_FIELD(batch_t, seq_id),
                      RK_FIELD(batch_t, logits)}},
        StructLayout{"llama_sampler_chain_params", sizeof(sampler_chain_params_t),
                     {RK_FIELD(sampler_chain_params_t, no_perf)}},
    };
}

std::vector<Signature> Api::declared_signatures() {
    static_assert(sizeof(std::size_t) == 8, "size_t arguments are declared as u64");
    return {
        {"llama_version", "p()"},
        {"llama_model_get_vocab", "p(p)"},
        {"llama_vocab_n_tokens", "i32(p)"},
        {"llama_vocab_is_eog", "b(p,i32)"},
        {"llama_tokenize", "i32(p,p,i32,p,i32,b,b)"},
        {"llama_token_to_piece", "i32(p,i32,p,i32,i32,b)"},
        {"llama_n_ctx", "u32(p)"},
        {"llama_n_batch", "u32(p)"},
        {"llama_get_memory", "p(p)"},
        {"llama_memory_seq_rm", "b(p,i32,i32,i32)"},
        {"llama_memory_clear", "v(p,b)"},
        {"llama_decode", "i32(p,S:llama_batch)"},
        {"llama_set_abort_callback", "v(p,p,p)"},
        {"llama_sampler_chain_default_params", "S:llama_sampler_chain_params()"},
        {"llama_sampler_chain_init", "p(S:llama_sampler_chain_params)"},
        {"llama_sampler_chain_add", "v(p,p)"},
        {"llama_sampler_init_greedy", "p()"},
        {"llama_sampler_init_dist", "p(u32)"},
        {"llama_sampler_init_top_k", "p(i32)"},
        {"llama_sampler_init_top_p", "p(f32,u64)"},
        {"llama_sampler_init_min_p", "p(f32,u64)"},
        {"llama_sampler_init_typical", "p(f32,u64)"},
        {"llama_sampler_init_temp", "p(f32)"},
        {"llama_sampler_init_penalties", "p(i32,i32,f32,f32,f32)"},
        {"llama_sampler_sample", "i32(p,p,i32)"},
        {"llama_sampler_free", "v(p)"},
    };
}

std::vector<std::string> compare_abi(const std::vector<StructLayout>& theirs,
                                     const std::vector<Signature>& their_signatures) {
    std::vector<std::string> problems;
    for (const StructLayout& ours : Api::declared_layouts()) {
        auto it = std::find_if(theirs.begin(), theirs.end(),
                               [&](const StructLayout& t) { return t.name == ours.name; });
        if (it == theirs.end()) {
            problems.push_back("struct " + ours.name + ": not described by llama-cpp-python");
            continue;
        }
        if (it->size != ours.size)
            problems.push_back("struct " + ours.name + ": size " + std::to_string(it->size) +
                               " in llama-cpp-python, " + std::to_string(ours.size) + " here");
        if (it->fields.size() != ours.fields.size())
            problems.push_back("struct " + ours.name + ": " + std::to_string(it->fields.size()) +
                               " fields in llama-cpp-python, " +
                               std::to_string(ours.fields.size()) + " here");
        for (const FieldLayout& f : ours.fields) {
            auto jt = std::find_if(it->fields.begin(), it->fields.end(),
                                   [&](const FieldLayout& g) { return g.name == f.name; });
            if (jt == it->fields.end()) {
                problems.push_back("struct " + ours.name + ": no field " + f.name +
                                   " in llama-cpp-python");
            } else if (jt->offset != f.offset || jt->size != f.size) {
                problems.push_back("struct " + ours.name + "." + f.name + ": offset " +
                                   std::to_string(jt->offset) + " size " +
                                   std::to_string(jt->size) + " in llama-cpp-python, offset " +
                                   std::to_string(f.offset) + " size " +
                                   std::to_string(f.size) + " here");
            }
        }
    }
    for (const Signature& ours : Api::declared_signatures()) {
        auto it = std::find_if(their_signatures.begin(), their_signatures.end(),
                               [&](const Signature& s) { return s.name == ours.name; });
        if (it == their_signatures.end())
            problems.push_back(ours.name + ": not declared by llama-cpp-python");
        else if (it->signature != ours.signature)
            problems.push_back(ours.name + ": " + it->signature + " in llama-cpp-python, " +
                               ours.signature + " here");
    }
    return problems;
}

std::shared_ptr<Api> Api::open(const std::string& lib_path,
                                     const std::string& bindings_version,
                                     const std::vector<StructLayout>& layouts,
                                     const std::vector<Signature>& signatures,
                                     bool allow_untested) {
#if defined(_WIN32)
    (void)lib_path; (void)bindings_version; (void)layouts; (void)signatures; (void)allow_untested;
    throw AbiError("llama_cpp_native is not available on Windows");
#else
    // RTLD_NOLOAD: only the copy llama-cpp-python loaded, never a second one. The handle is
    // kept for the life of the process (the library must outlive every context anyway).
    void* handle = ::dlopen(lib_path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (handle == nullptr) {
        const char* why = ::dlerror();
        throw AbiError("libllama at " + lib_path + " is not loaded in this process (" +
                       (why ? why : "dlopen failed") + "); import llama_cpp first");
    }
    auto api = std::make_shared<Api>();
    api->handle_ = handle;
    api->bindings_version = bindings_version;
    std::vector<std::string> missing;
    resolve(handle, "llama_version", api->version, missing);
    api->library_version = api->version != nullptr && api->version() != nullptr
                               ? std::string(api->version())
                               : std::string("unknown");

    std::vector<std::string> problems = compare_abi(layouts, signatures);
    const bool verified =
        listed(kVerifiedBindings, bindings_version) && listed(kVerifiedLibrary, api->library_version);
    if (!problems.empty() || (!verified && !allow_untested)) {
        std::ostringstream msg;
        msg << "llama_cpp_native cannot use this llama.cpp: it runs on llama-cpp-python "
            << bindings_version << " (libllama " << api->library_version
            << "), and routekit's native decode loop was verified against llama-cpp-python "
            << joined(kVerifiedBindings) << " (libllama " << joined(kVerifiedLibrary) << ")";
        if (problems.empty()) {
            msg << "; every layout and signature it uses matches (set "
                   "ROUTEKIT_LLAMA_NATIVE_UNTESTED=1 to accept this version)";
        } else {
            msg << "; mismatches:";
            for (const std::string& p : problems) msg << "\n  " << p;
        }
        throw AbiError(msg.str());
    }

    resolve(handle, "llama_model_get_vocab", api->model_get_vocab, missing);
    resolve(handle, "llama_vocab_n_tokens", api->vocab_n_tokens, missing);
    resolve(handle, "llama_vocab_is_eog", api->vocab_is_eog, missing);
    resolve(handle, "llama_tokenize", api->tokenize, missing);
    resolve(handle, "llama_token_to_piece", api->token_to_piece, missing);
    resolve(handle, "llama_n_ctx", api->n_ctx, missing);
    resolve(handle, "llama_n_batch", api->n_batch, missing);
    resolve(handle, "llama_get_memory", api->get_memory, missing);
    resolve(handle, "llama_memory_seq_rm", api->memory_seq_rm, missing);
    resolve(handle, "llama_memory_clear", api->memory_clear, missing);
    resolve(handle, "llama_decode", api->decode, missing);
    resolve(handle, "llama_set_abort_callback", api->set_abort_callback, missing);
    resolve(handle, "llama_sampler_chain_default_params", api->sampler_chain_default_params,
            missing);
    resolve(handle, "llama_sampler_chain_init", api->sampler_chain_init, missing);
    resolve(handle, "llama_sampler_chain_add", api->sampler_chain_add, missing);
    resolve(handle, "llama_sampler_init_greedy", api->sampler_init_greedy, missing);
    resolve(handle, "llama_sampler_init_dist", api->sampler_init_dist, missing);
    resolve(handle, "llama_sampler_init_top_k", api->sampler_init_top_k, missing);
    resolve(handle, "llama_sampler_init_top_p", api->sampler_init_top_p, missing);
    resolve(handle, "llama_sampler_init_min_p", api->sampler_init_min_p, missing);
    resolve(handle, "llama_sampler_init_typical", api->sampler_init_typical, missing);
    resolve(handle, "llama_sampler_init_temp", api->sampler_init_temp, missing);
    resolve(handle, "llama_sampler_init_penalties", api->sampler_init_penalties, missing);
    resolve(handle, "llama_sampler_sample", api->sampler_sample, missing);
    resolve(handle, "llama_sampler_free", api->sampler_free, missing);
    if (!missing.empty()) {
        std::string names;
        for (const std::string& m : missing) names += (names.empty() ? "" : ", ") + m;
        throw AbiError("libllama " + api->library_version + " at " + lib_path +
                       " lacks symbols the native decode loop calls: " + names);
    }
    return api;
#endif
}

// ---- Job ----------------------------------------------------------------------------------

bool Job::wait(double timeout_s) {
    std::unique_lock<std::mutex> lock(mu_);
    if (timeout_s < 0) {
        cv_.wait(lock, [&] { return done_; });
        return true;
    }
    return cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return done_; });
}

bool Job::done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
}

std::string Job::error() const {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
}

void Job::complete(std::int32_t finish, std::string error) {
    std::lock_guard<std::mutex> lock(mu_);
    finish_.store(finish);
    error_ = std::move(error);
    done_ = true;
    cv_.notify_all();
}

// ---- NativeContext ------------------------------------------------------------------------

NativeContext::NativeContext(std::shared_ptr<const Api> api, void* model, void* ctx)
    : api_(std::move(api)), model_(model), ctx_(ctx) {
    if (api_ == nullptr || model_ == nullptr || ctx_ == nullptr)
        throw std::invalid_argument("NativeContext needs an Api, a model and a context");
    vocab_ = api_->model_get_vocab(model_);
    memory_ = api_->get_memory(ctx_);
    if (vocab_ == nullptr) throw std::invalid_argument("the model has no vocabulary");
    if (memory_ == nullptr) throw std::invalid_argument("the context has no KV memory");
    n_ctx_ = api_->n_ctx(ctx_);
    n_batch_ = std::max<std::uint32_t>(1, api_->n_batch(ctx_));
    n_vocab_ = api_->vocab_n_tokens(vocab_);
    b_token_.resize(n_batch_);
    b_pos_.resize(n_batch_);
    b_n_seq_.assign(n_batch_, 1);
    b_seq_storage_.assign(n_batch_, 0);
    b_seq_.resize(n_batch_);
    for (std::uint32_t i = 0; i < n_batch_; ++i) b_seq_[i] = &b_seq_storage_[i];
    b_logits_.assign(n_batch_, 0);
    api_->set_abort_callback(ctx_, &NativeContext::abort_decode, abort_cell_);
    thread_ = std::thread([this] { worker(); });
}

NativeContext::~NativeContext() { close(); }

bool NativeContext::abort_decode(void* cell) {
    // Called on the decoding thread (ggml's CPU backend asks from its first thread). A job
    // is named only while decode_range's api_->decode runs for it, so it is alive.
    const Job* job = static_cast<AbortCell*>(cell)->decoding.load(std::memory_order_acquire);
    return job != nullptr && job->cancel_requested();
}

void NativeContext::close() {
    std::lock_guard<std::mutex> join_lock(join_mu_);  // one closer joins; the others wait
    std::deque<Pending> dropped;
    {
        std::lock_guard<std::mutex> lock(mu_);
        closing_ = true;
        dropped.swap(queue_);
        if (running_) running_->cancel();
    }
    cv_.notify_all();
    for (Pending& p : dropped) {
        p.job->complete(kFinishCancelled, "native context closed");
        p.job->relay()->finish(p.job->producer(), kFinishCancelled, std::string(), 0);
    }
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

std::shared_ptr<Job> NativeContext::submit(Request request, std::shared_ptr<Relay> relay,
                                           int producer) {
    auto job = std::make_shared<Job>(std::move(relay), producer);
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (closing_) throw std::logic_error("native context is closed");
        queue_.push_back(Pending{std::move(request), job});
    }
    cv_.notify_one();
    return job;
}

std::vector<token_t> NativeContext::cached_tokens() const {
    std::lock_guard<std::mutex> lock(cache_mu_);
    return cache_;
}

void NativeContext::invalidate_cache() {
    // Only between jobs: callers hold the model's gate, so the worker is idle.
    std::lock_guard<std::mutex> lock(cache_mu_);
    cache_.clear();
    api_->memory_clear(memory_, true);
    cache_known_ = true;
}

void NativeContext::adopt_cache(const std::vector<token_t>& tokens) {
    // Only between jobs, like invalidate_cache.
    if (tokens.size() > n_ctx_) throw std::length_error("more tokens than the context holds");
    std::lock_guard<std::mutex> lock(cache_mu_);
    cache_ = tokens;
    cache_known_ = true;
    // Whatever the cache holds past them is not theirs: a later decode at those positions
    // would fail. A memory that cannot cut a sequence is cleared (and nothing adopted).
    if (!api_->memory_seq_rm(memory_, 0, static_cast<pos_t>(cache_.size()), -1)) {
        cache_.clear();
        api_->memory_clear(memory_, true);
    }
}

std::vector<token_t> NativeContext::tokenize(const std::string& text, bool add_special,
                                             bool parse_special) const {
    if (text.size() > static_cast<std::size_t>(INT32_MAX))
        throw std::length_error("prompt too long to tokenize");
    const auto len = static_cast<std::int32_t>(text.size());
    std::vector<token_t> out(text.size() / 2 + 16);
    std::int32_t n = api_->tokenize(vocab_, text.data(), len, out.data(),
                                    static_cast<std::int32_t>(out.size()), add_special,
                                    parse_special);
    if (n < 0) {
        if (n == INT32_MIN) throw std::length_error("prompt too long to tokenize");
        out.resize(static_cast<std::size_t>(-n));
        n = api_->tokenize(vocab_, text.data(), len, out.data(),
                           static_cast<std::int32_t>(out.size()), add_special, parse_special);
        if (n < 0) throw std::runtime_error("llama_tokenize failed");
    }
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::string NativeContext::token_piece(token_t token) const {
    char buf[128];
    std::int32_t n = api_->token_to_piece(vocab_, token, buf, sizeof buf, 0, false);
    if (n >= 0) return std::string(buf, static_cast<std::size_t>(n));
    std::string big(static_cast<std::size_t>(-n), '\0');
    n = api_->token_to_piece(vocab_, token, &big[0], static_cast<std::int32_t>(big.size()), 0,
                             false);
    big.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return big;
}

void* NativeContext::make_sampler(const Sampling& s) const {
    // The same chain, in the same order, as llama-cpp-python's Llama._init_sampler (0.3.36),
    // so that temperature 0 picks the same tokens: penalties first (they see only the tokens
    // generated by this request: the chain is new per request), then greedy or the usual
    // top-k / typical / top-p / min-p / temperature / dist.
    const Api& a = *api_;
    void* chain = a.sampler_chain_init(a.sampler_chain_default_params());
    if (chain == nullptr) throw std::runtime_error("llama_sampler_chain_init failed");
    a.sampler_chain_add(chain, a.sampler_init_penalties(n_vocab_, s.penalty_last_n,
                                                        s.repeat_penalty, s.frequency_penalty,
                                                        s.presence_penalty));
    if (s.temperature < 0.0f) {
        a.sampler_chain_add(chain, a.sampler_init_dist(s.seed));
    } else if (s.temperature == 0.0f) {
        a.sampler_chain_add(chain, a.sampler_init_greedy());
    } else {
        a.sampler_chain_add(chain, a.sampler_init_top_k(s.top_k));
        a.sampler_chain_add(chain, a.sampler_init_typical(s.typical_p, 1));
        a.sampler_chain_add(chain, a.sampler_init_top_p(s.top_p, 1));
        a.sampler_chain_add(chain, a.sampler_init_min_p(s.min_p, 1));
        a.sampler_chain_add(chain, a.sampler_init_temp(s.temperature));
        a.sampler_chain_add(chain, a.sampler_init_dist(s.seed));
    }
    return chain;
}

namespace {
constexpr int kDecodeCancelled = 1000;
// How long the loop waits, once per request, for the consumer to deliver the first piece.
// A consumer's round trip measured ~0.3-0.6 ms on the dev VM; 2 ms also bounds the cost when
// it is slower (a busy Python thread holding the GIL, a caller doing work between chunks).
constexpr double kFirstPieceHandoffSeconds = 0.002;
}

int NativeContext::decode_range(const std::vector<token_t>& tokens, std::size_t from,
                                std::size_t to, Job& job) {
    for (std::size_t start = from; start < to; start += n_batch_) {
        if (job.cancel_requested()) return kDecodeCancelled;
        const std::size_t n = std::min<std::size_t>(n_batch_, to - start);
        std::size_t pos0;
        {
            std::lock_guard<std::mutex> lock(cache_mu_);
            pos0 = cache_.size();
        }
        for (std::size_t i = 0; i < n; ++i) {
            b_token_[i] = tokens[start + i];
            b_pos_[i] = static_cast<pos_t>(pos0 + i);
            b_logits_[i] = 0;
        }
        b_logits_[n - 1] = 1;
        batch_t batch{static_cast<std::int32_t>(n), b_token_.data(), nullptr, b_pos_.data(),
                      b_n_seq_.data(), b_seq_.data(), b_logits_.data()};
        abort_cell_->decoding.store(&job, std::memory_order_release);
        const std::int32_t rc = api_->decode(ctx_, batch);
        abort_cell_->decoding.store(nullptr, std::memory_order_release);
        std::lock_guard<std::mutex> lock(cache_mu_);
        if (rc != 0) {
            // Some ubatches may have landed in the cache: forget it all rather than guess.
            cache_.clear();
            api_->memory_clear(memory_, true);
            // 2: aborted by abort_decode, the job cancelled mid-batch (a deadline, a close).
            return job.cancel_requested() ? kDecodeCancelled : rc;
        }
        cache_.insert(cache_.end(), tokens.begin() + static_cast<std::ptrdiff_t>(start),
                      tokens.begin() + static_cast<std::ptrdiff_t>(start + n));
    }
    return 0;
}

void NativeContext::worker() {
    for (;;) {
        Pending item;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
            if (queue_.empty()) return;
            item = std::move(queue_.front());
            queue_.pop_front();
            running_ = item.job;
        }
        Job& job = *item.job;
        try {
            run(item.request, job);
        } catch (const std::exception& e) {
            // run() finishes the relay itself on every path it knows; this is the rest
            // (allocation failure and the like). finish() is idempotent per producer.
            job.complete(kFinishError, e.what());
            job.relay()->finish(job.producer(), kFinishError, e.what(), 0);
        }
        std::lock_guard<std::mutex> lock(mu_);
        running_.reset();
    }
}

void NativeContext::run(Request& rq, Job& job) {
    using clock = std::chrono::steady_clock;
    const auto started = clock::now();
    auto since = [](clock::time_point t0, clock::time_point t1) {
        return std::chrono::duration<double>(t1 - t0).count();
    };
    clock::time_point first_token{};
    Relay& relay = *job.relay();
    const int producer = job.producer();
    auto end = [&](std::int32_t reason, std::string text, std::int32_t tokens,
                   std::string error) {
        // The job is done with the context before the consumer can see the end.
        job.complete(reason, std::move(error));
        relay.finish(producer, reason, std::move(text), tokens);
    };

    if (job.cancel_requested()) return end(kFinishCancelled, std::string(), 0, std::string());
    std::vector<token_t> prompt = rq.prompt_tokens.empty()
                                      ? tokenize(rq.prompt_text, rq.add_special, rq.parse_special)
                                      : std::move(rq.prompt_tokens);
    const std::size_t n_prompt = prompt.size();
    job.prompt_tokens_.store(static_cast<std::int32_t>(n_prompt));
    if (n_prompt == 0) return end(kFinishError, "empty prompt", 0, "empty prompt");
    if (n_prompt >= n_ctx_) {
        // llama-cpp-python's rule: the prompt must leave room for one token.
        std::string info = std::to_string(n_prompt) + " " + std::to_string(n_ctx_);
        return end(kFinishContextFull, info, 0, "prompt does not fit the context");
    }
    const std::size_t room = n_ctx_ - n_prompt;
    std::size_t max_tokens = rq.max_tokens <= 0 ? room : static_cast<std::size_t>(rq.max_tokens);
    if (max_tokens + n_prompt >= n_ctx_) max_tokens = room;

    // Prefix reuse: keep the KV entries of the longest common prefix with what the cache
    // holds; the last prompt token is always decoded again, for its logits.
    std::size_t keep = 0;
    {
        std::lock_guard<std::mutex> lock(cache_mu_);
        if (!cache_known_) {  // whatever llama-cpp-python left is unknown to us: start clean
            cache_.clear();
            api_->memory_clear(memory_, true);
            cache_known_ = true;
        }
        const std::size_t limit = std::min(cache_.size(), n_prompt - 1);
        while (keep < limit && cache_[keep] == prompt[keep]) ++keep;
        if (keep < cache_.size()) {
            if (!api_->memory_seq_rm(memory_, 0, static_cast<pos_t>(keep), -1)) {
                api_->memory_clear(memory_, true);  // this memory cannot cut a sequence
                keep = 0;
            }
            cache_.resize(keep);
        }
    }
    job.reused_tokens_.store(static_cast<std::int32_t>(keep));

    int rc = decode_range(prompt, keep, n_prompt, job);
    if (rc == kDecodeCancelled) return end(kFinishCancelled, std::string(), 0, std::string());
    if (rc != 0) {
        const std::string why = "llama_decode returned " + std::to_string(rc) + " on the prompt";
        return end(kFinishError, why, 0, why);
    }

    struct SamplerGuard {
        const Api& api;
        void* s;
        ~SamplerGuard() {
            if (s != nullptr) api.sampler_free(s);
        }
    } sampler{*api_, make_sampler(rq.sampling)};

    TextAssembler out(std::move(rq.stops));
    std::int32_t unsent = 0;  // tokens generated since the last push
    bool handed_off = false;  // the first piece went out (see wait_consumer_back)
    std::size_t n_gen = 0;
    std::vector<token_t> one(1);
    std::int32_t reason = kFinishLength;
    std::string error;

    for (;;) {
        if (job.cancel_requested()) {
            reason = kFinishCancelled;
            break;
        }
        const token_t tok = api_->sampler_sample(sampler.s, ctx_, -1);
        const auto now = clock::now();
        if (n_gen == 0) {
            first_token = now;
            job.to_first_.store(since(started, now));
        } else {
            job.decoding_.store(since(first_token, now));
        }
        if (api_->vocab_is_eog(vocab_, tok)) {
            reason = kFinishStop;  // the end-of-generation token is not counted, not shown
            break;
        }
        ++n_gen;
        ++unsent;
        job.completion_tokens_.store(static_cast<std::int32_t>(n_gen));
        if (out.add(token_piece(tok))) {
            reason = kFinishStop;  // a stop sequence
            break;
        }
        if (n_gen >= max_tokens) {
            reason = kFinishLength;
            break;
        }
        std::string safe = out.take_safe();
        if (!safe.empty()) {
            if (!relay.push(producer, std::move(safe), unsent)) {
                reason = kFinishCancelled;
                break;
            }
            unsent = 0;
            if (!handed_off) {
                // Time to first token: let the consumer take the first piece and deliver it
                // before the next decode step takes every core (bounded: a consumer that is
                // slow to come back costs the loop at most this, once).
                handed_off = true;
                relay.wait_consumer_back(producer, kFirstPieceHandoffSeconds);
            }
        }

        one[0] = tok;
        rc = decode_range(one, 0, 1, job);
        if (rc == kDecodeCancelled) {
            reason = kFinishCancelled;
            break;
        }
        if (rc != 0) {
            reason = kFinishError;
            error = "llama_decode returned " + std::to_string(rc) + " after " +
                    std::to_string(n_gen) + " tokens";
            break;
        }
    }
    api_->sampler_free(sampler.s);
    sampler.s = nullptr;
    if (reason == kFinishError) return end(reason, error, unsent, error);
    if (reason == kFinishCancelled) return end(reason, std::string(), unsent, std::string());
    end(reason, out.take_rest(), unsent, std::string());
}

// ---- log sink -----------------------------------------------------------------------------

namespace {

constexpr std::size_t kMaxLogLines = 4096;
constexpr int kLogCont = 5;  // GGML_LOG_LEVEL_CONT: continues the previous line

std::mutex g_log_mu;
std::deque<std::pair<int, std::string>> g_log_lines;
std::string g_log_partial;
int g_log_level = 0;
std::size_t g_log_dropped = 0;
std::atomic<bool> g_log_pending{false};

void push_line_locked(int level, std::string line) {
    if (g_log_lines.size() >= kMaxLogLines) {
        g_log_lines.pop_front();
        ++g_log_dropped;
    }
    g_log_lines.emplace_back(level, std::move(line));
    g_log_pending.store(true, std::memory_order_release);
}

extern "C" void routekit_llama_log(int level, const char* text, void* /*user_data*/) {
    if (text == nullptr) return;
    std::lock_guard<std::mutex> lock(g_log_mu);
    if (level != kLogCont) {
        if (!g_log_partial.empty()) push_line_locked(g_log_level, std::move(g_log_partial));
        g_log_partial.clear();
        g_log_level = level;
    }
    g_log_partial += text;
    std::size_t nl;
    while ((nl = g_log_partial.find('\n')) != std::string::npos) {
        push_line_locked(g_log_level, g_log_partial.substr(0, nl));
        g_log_partial.erase(0, nl + 1);
    }
}

}  // namespace

bool install_log_sink(const std::string& lib_path) {
#if defined(_WIN32)
    (void)lib_path;
    return false;
#else
    void* handle = ::dlopen(lib_path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (handle == nullptr) return false;
    using log_set_t = void (*)(void (*)(int, const char*, void*), void*);
    auto set = reinterpret_cast<log_set_t>(::dlsym(handle, "llama_log_set"));
    if (set == nullptr) return false;
    set(&routekit_llama_log, nullptr);
    return true;
#endif
}

std::vector<std::pair<int, std::string>> drain_logs(std::size_t& dropped) {
    std::lock_guard<std::mutex> lock(g_log_mu);
    std::vector<std::pair<int, std::string>> out(std::make_move_iterator(g_log_lines.begin()),
                                                 std::make_move_iterator(g_log_lines.end()));
    g_log_lines.clear();
    dropped = g_log_dropped;
    g_log_dropped = 0;
    g_log_pending.store(false, std::memory_order_release);
    return out;
}

bool logs_pending() { return g_log_pending.load(std::memory_order_acquire); }

}  // namespace llama
}  // namespace routekit
