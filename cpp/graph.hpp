// routekit plan core: a fallback graph compiled to integer ids.
//
// Plain C++17, no Python: bindings.cpp is the only file that knows about pybind11, so this
// header and graph.cpp can be compiled and tested on their own.
//
// Thread safety: a Graph is immutable after construction except for its availability flags,
// which are atomics. Every const method may run concurrently with any other method,
// including the flag setters, from any number of threads.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace routekit {

using NodeId = std::int32_t;

class Graph {
public:
    // names[i] is model i; provider_of[i] its provider id in [0, num_providers);
    // chains[i] its fallback chain as model ids, in order. Throws std::invalid_argument on
    // mismatched sizes, duplicate names, or an id out of range.
    Graph(std::vector<std::string> names, std::vector<NodeId> provider_of,
          NodeId num_providers, const std::vector<std::vector<NodeId>>& chains);

    Graph(const Graph&) = delete;
    Graph& operator=(const Graph&) = delete;

    std::size_t size() const { return names_.size(); }
    NodeId num_providers() const { return num_providers_; }
    const std::vector<std::string>& names() const { return names_; }
    NodeId provider_of(NodeId model) const;  // throws std::out_of_range
    std::vector<NodeId> chain(NodeId model) const;

    // Model id for a name, or -1 when the name is unknown.
    NodeId find(const std::string& name) const;

    // Candidates for `entry`: preorder DFS over the chains, each model at most once, no
    // deeper than max_depth hops. When respect_availability is set, unavailable models
    // are left out of the result but their own chains are still expanded.
    // Appends to `out` after clearing it; allocates nothing else once the calling
    // thread's scratch buffers have grown to the graph's size.
    void plan_into(NodeId entry, int max_depth, bool respect_availability,
                   std::vector<NodeId>& out) const;
    std::vector<NodeId> plan(NodeId entry, int max_depth, bool respect_availability) const;
    // One plan per model, in id order.
    std::vector<std::vector<NodeId>> plans(int max_depth, bool respect_availability) const;

    // Every elementary cycle, each rotated so its smallest id comes first and closed on
    // that id ([a, b, a]; a self-loop is [a, a]), in lexicographic order; at most `limit`.
    std::vector<std::vector<NodeId>> cycles(std::size_t limit) const;
    // Models whose chain is empty, in id order.
    std::vector<NodeId> terminals() const;
    // Longest simple path (in edges) of the graph minus its DFS back edges; among equally
    // long paths the lexicographically smallest. Empty only for an empty graph.
    std::vector<NodeId> longest_path() const;

    void set_model_available(NodeId model, bool available);
    void set_provider_available(NodeId provider, bool available);
    bool model_flag(NodeId model) const;
    bool provider_flag(NodeId provider) const;
    // model flag && its provider's flag
    bool is_available(NodeId model) const;

private:
    void check_model(NodeId model) const;
    bool available_unchecked(NodeId model) const {
        return model_up_[model].load(std::memory_order_relaxed) &&
               provider_up_[provider_of_[model]].load(std::memory_order_relaxed);
    }

    std::vector<std::string> names_;
    std::vector<NodeId> provider_of_;
    NodeId num_providers_;
    // Chains in CSR form, in chain order (duplicates kept: plan() skips them anyway).
    std::vector<std::uint32_t> chain_start_;  // size n + 1
    std::vector<NodeId> chain_ids_;
    // Distinct successors sorted by id, CSR form: what cycle enumeration walks.
    std::vector<std::uint32_t> succ_start_;
    std::vector<NodeId> succ_ids_;
    std::unordered_map<std::string, NodeId> index_;
    // Relaxed atomics: each flag is an independent hint; no other memory is published
    // through them, so no ordering is needed, only freedom from data races.
    std::unique_ptr<std::atomic<bool>[]> model_up_;
    std::unique_ptr<std::atomic<bool>[]> provider_up_;
};

}  // namespace routekit
