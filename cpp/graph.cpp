// routekit plan core: construction, plan expansion, cycles, terminals, longest path.
//
// Every traversal here is iterative with an explicit stack: a 10,000-model chain must not
// overflow the C++ stack (and a Python thread's stack is smaller than the main thread's).
#include "graph.hpp"

#include <algorithm>
#include <functional>
#include <limits>
#include <queue>
#include <stdexcept>
#include <utility>

namespace routekit {

namespace {

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument(what); }

// Per-thread scratch for plan(): a stamp per model instead of a `seen` set, so a plan
// clears its visited marks by bumping one counter instead of touching n bytes or
// allocating. Shared by every Graph used on the thread: each call takes a fresh
// generation, so stamps left by another graph can never match.
struct PlanScratch {
    std::vector<std::uint32_t> stamp;
    std::uint32_t generation = 0;
    std::vector<std::pair<NodeId, int>> stack;  // (model, depth)

    std::uint32_t begin(std::size_t n) {
        if (stamp.size() < n) stamp.resize(n, 0);
        if (++generation == 0) {  // wrapped after 2^32 plans: old stamps could collide
            std::fill(stamp.begin(), stamp.end(), 0);
            generation = 1;
        }
        stack.clear();
        return generation;
    }
};

thread_local PlanScratch t_plan;

// Strongly connected components of the subgraph induced by the nodes for which
// `inside(v)` holds, over sorted-successor CSR arrays; Tarjan's algorithm, iterative.
// `index`, `low` (size n, all -1 on entry and on return for the nodes touched) and
// `on_stack` (all 0) are caller-owned so repeated runs do not reallocate.
class Tarjan {
public:
    Tarjan(const std::vector<std::uint32_t>& start, const std::vector<NodeId>& ids)
        : start_(start), ids_(ids), index_(start.size() - 1, -1),
          low_(start.size() - 1, -1), on_stack_(start.size() - 1, 0) {}

    template <class Inside>
    std::vector<std::vector<NodeId>> run(const std::vector<NodeId>& roots, Inside inside) {
        std::vector<std::vector<NodeId>> out;
        NodeId counter = 0;
        for (NodeId root : roots) {
            if (!inside(root) || index_[root] != -1) continue;
            enter(root, counter);
            while (!frames_.empty()) {
                const NodeId v = frames_.back().first;
                const std::uint32_t pos = frames_.back().second;
                if (pos < start_[v + 1]) {
                    ++frames_.back().second;
                    const NodeId w = ids_[pos];
                    if (!inside(w)) continue;
                    if (index_[w] == -1) {
                        enter(w, counter);
                    } else if (on_stack_[w]) {
                        low_[v] = std::min(low_[v], index_[w]);
                    }
                    continue;
                }
                frames_.pop_back();
                if (!frames_.empty()) {
                    const NodeId u = frames_.back().first;
                    low_[u] = std::min(low_[u], low_[v]);
                }
                if (low_[v] == index_[v]) {
                    std::vector<NodeId> comp;
                    NodeId w;
                    do {
                        w = stack_.back();
                        stack_.pop_back();
                        on_stack_[w] = 0;
                        comp.push_back(w);
                    } while (w != v);
                    out.push_back(std::move(comp));
                }
            }
        }
        for (const auto& comp : out)
            for (NodeId v : comp) index_[v] = low_[v] = -1;
        return out;
    }

private:
    void enter(NodeId v, NodeId& counter) {
        index_[v] = low_[v] = counter++;
        stack_.push_back(v);
        on_stack_[v] = 1;
        frames_.emplace_back(v, start_[v]);
    }

    const std::vector<std::uint32_t>& start_;
    const std::vector<NodeId>& ids_;
    std::vector<NodeId> index_, low_;
    std::vector<char> on_stack_;
    std::vector<NodeId> stack_;
    std::vector<std::pair<NodeId, std::uint32_t>> frames_;  // (node, next successor slot)
};

bool has_self_loop(const std::vector<std::uint32_t>& start, const std::vector<NodeId>& ids,
                   NodeId v) {
    return std::binary_search(ids.begin() + start[v], ids.begin() + start[v + 1], v);
}

}  // namespace

Graph::Graph(std::vector<std::string> names, std::vector<NodeId> provider_of,
             NodeId num_providers, const std::vector<std::vector<NodeId>>& chains)
    : names_(std::move(names)), provider_of_(std::move(provider_of)),
      num_providers_(num_providers) {
    const std::size_t n = names_.size();
    if (n > static_cast<std::size_t>(std::numeric_limits<NodeId>::max()))
        bad("too many models");
    if (num_providers_ < 0) bad("num_providers must be >= 0");
    if (provider_of_.size() != n)
        bad("provider_of has " + std::to_string(provider_of_.size()) + " entries for " +
            std::to_string(n) + " models");
    if (chains.size() != n)
        bad("chains has " + std::to_string(chains.size()) + " entries for " +
            std::to_string(n) + " models");

    index_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        if (!index_.emplace(names_[i], static_cast<NodeId>(i)).second)
            bad("duplicate model name '" + names_[i] + "'");
        const NodeId p = provider_of_[i];
        if (p < 0 || p >= num_providers_)
            bad("model '" + names_[i] + "' has provider id " + std::to_string(p) +
                " outside [0, " + std::to_string(num_providers_) + ")");
    }

    std::size_t edges = 0;
    for (const auto& c : chains) edges += c.size();
    if (edges > std::numeric_limits<std::uint32_t>::max()) bad("too many chain entries");

    chain_start_.reserve(n + 1);
    chain_ids_.reserve(edges);
    succ_start_.reserve(n + 1);
    succ_ids_.reserve(edges);
    chain_start_.push_back(0);
    succ_start_.push_back(0);
    for (std::size_t i = 0; i < n; ++i) {
        for (NodeId c : chains[i]) {
            if (c < 0 || static_cast<std::size_t>(c) >= n)
                bad("chain of model '" + names_[i] + "' names model id " + std::to_string(c) +
                    " outside [0, " + std::to_string(n) + ")");
            chain_ids_.push_back(c);
            succ_ids_.push_back(c);
        }
        chain_start_.push_back(static_cast<std::uint32_t>(chain_ids_.size()));
        auto first = succ_ids_.begin() + succ_start_.back();
        std::sort(first, succ_ids_.end());
        succ_ids_.erase(std::unique(first, succ_ids_.end()), succ_ids_.end());
        succ_start_.push_back(static_cast<std::uint32_t>(succ_ids_.size()));
    }

    model_up_.reset(new std::atomic<bool>[n]);
    for (std::size_t i = 0; i < n; ++i) model_up_[i].store(true, std::memory_order_relaxed);
    provider_up_.reset(new std::atomic<bool>[static_cast<std::size_t>(num_providers_)]);
    for (NodeId p = 0; p < num_providers_; ++p)
        provider_up_[p].store(true, std::memory_order_relaxed);
}

void Graph::check_model(NodeId model) const {
    if (model < 0 || static_cast<std::size_t>(model) >= names_.size())
        bad("model id " + std::to_string(model) + " outside [0, " +
            std::to_string(names_.size()) + ")");
}

NodeId Graph::provider_of(NodeId model) const {
    check_model(model);
    return provider_of_[model];
}

std::vector<NodeId> Graph::chain(NodeId model) const {
    check_model(model);
    return {chain_ids_.begin() + chain_start_[model], chain_ids_.begin() + chain_start_[model + 1]};
}

NodeId Graph::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? -1 : it->second;
}

// ---------------------------------------------------------------------------------------
// Plans

void Graph::plan_into(NodeId entry, int max_depth, bool respect_availability,
                      std::vector<NodeId>& out) const {
    check_model(entry);
    if (max_depth < 0) bad("max_depth must be >= 0");
    out.clear();
    PlanScratch& s = t_plan;
    const std::uint32_t gen = s.begin(names_.size());
    std::uint32_t* stamp = s.stamp.data();
    // Preorder DFS: children pushed in reverse so the first fallback is expanded first;
    // a model is marked when popped, which is exactly when the recursive visit() would
    // first reach it.
    s.stack.emplace_back(entry, 0);
    while (!s.stack.empty()) {
        const auto [v, depth] = s.stack.back();
        s.stack.pop_back();
        if (stamp[v] == gen) continue;
        stamp[v] = gen;
        if (!respect_availability || available_unchecked(v)) out.push_back(v);
        if (depth == max_depth) continue;
        for (std::uint32_t i = chain_start_[v + 1]; i-- > chain_start_[v];) {
            const NodeId w = chain_ids_[i];
            if (stamp[w] != gen) s.stack.emplace_back(w, depth + 1);
        }
    }
}

std::vector<NodeId> Graph::plan(NodeId entry, int max_depth, bool respect_availability) const {
    std::vector<NodeId> out;
    plan_into(entry, max_depth, respect_availability, out);
    return out;
}

std::vector<std::vector<NodeId>> Graph::plans(int max_depth, bool respect_availability) const {
    if (max_depth < 0) bad("max_depth must be >= 0");
    std::vector<std::vector<NodeId>> out(names_.size());
    for (std::size_t i = 0; i < names_.size(); ++i)
        plan_into(static_cast<NodeId>(i), max_depth, respect_availability, out[i]);
    return out;
}

// ---------------------------------------------------------------------------------------
// Cycles: Johnson's algorithm, iterative, visiting successors in ascending id order.
//
// Components are processed smallest-vertex first (a min-heap). From component C with
// smallest vertex s, the circuit search finds every cycle whose smallest vertex is s; then
// s is removed and the SCCs of C - {s} are queued. Because the circuit search is a DFS
// with ascending successors, and s is smaller than everything else in C, cycles come out
// in lexicographic order of their closed id lists; so stopping at `limit` keeps exactly
// the first `limit` cycles of the sorted list. Nodes in trivial SCCs are never searched,
// which is why a large acyclic graph costs one Tarjan pass.

std::vector<std::vector<NodeId>> Graph::cycles(std::size_t limit) const {
    std::vector<std::vector<NodeId>> result;
    const std::size_t n = names_.size();
    if (limit == 0 || n == 0) return result;

    Tarjan tarjan(succ_start_, succ_ids_);
    std::vector<NodeId> label(n, -1);  // component each node currently belongs to
    std::vector<std::vector<NodeId>> comps;
    using Item = std::pair<NodeId, std::size_t>;  // (smallest vertex, component index)
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;

    auto queue_sccs = [&](std::vector<std::vector<NodeId>>&& sccs) {
        for (auto& comp : sccs) {
            if (comp.size() == 1 && !has_self_loop(succ_start_, succ_ids_, comp[0])) {
                label[comp[0]] = -1;
                continue;
            }
            std::sort(comp.begin(), comp.end());
            const NodeId k = static_cast<NodeId>(comps.size());
            for (NodeId v : comp) label[v] = k;
            heap.emplace(comp[0], comps.size());
            comps.push_back(std::move(comp));
        }
    };

    std::vector<NodeId> all(n);
    for (std::size_t i = 0; i < n; ++i) all[i] = static_cast<NodeId>(i);
    queue_sccs(tarjan.run(all, [](NodeId) { return true; }));

    std::vector<char> blocked(n, 0);
    std::vector<std::vector<NodeId>> blocked_by(n);  // Johnson's B sets
    std::vector<NodeId> path, work;
    struct Frame {
        NodeId v;
        std::uint32_t pos;
        bool found;
    };
    std::vector<Frame> frames;

    auto unblock = [&](NodeId u) {
        blocked[u] = 0;
        work.assign(1, u);
        while (!work.empty()) {
            const NodeId x = work.back();
            work.pop_back();
            for (NodeId w : blocked_by[x])
                if (blocked[w]) {
                    blocked[w] = 0;
                    work.push_back(w);
                }
            blocked_by[x].clear();
        }
    };

    while (!heap.empty()) {
        const auto [s, k] = heap.top();
        heap.pop();
        std::vector<NodeId> comp = std::move(comps[k]);
        const NodeId kid = static_cast<NodeId>(k);
        auto inside = [&](NodeId w) { return label[w] == kid; };

        blocked[s] = 1;
        path.assign(1, s);
        frames.assign(1, Frame{s, succ_start_[s], false});
        while (!frames.empty()) {
            Frame& f = frames.back();
            const NodeId v = f.v;
            if (f.pos < succ_start_[v + 1]) {
                const NodeId w = succ_ids_[f.pos++];
                if (!inside(w)) continue;
                if (w == s) {
                    f.found = true;
                    result.push_back(path);
                    result.back().push_back(s);
                    if (result.size() >= limit) return result;
                } else if (!blocked[w]) {
                    blocked[w] = 1;
                    path.push_back(w);
                    frames.push_back(Frame{w, succ_start_[w], false});
                }
                continue;
            }
            const bool found = f.found;
            if (found) {
                unblock(v);
            } else {
                for (std::uint32_t i = succ_start_[v]; i < succ_start_[v + 1]; ++i) {
                    const NodeId w = succ_ids_[i];
                    if (!inside(w)) continue;
                    auto& b = blocked_by[w];
                    if (std::find(b.begin(), b.end(), v) == b.end()) b.push_back(v);
                }
            }
            frames.pop_back();
            path.pop_back();
            if (found && !frames.empty()) frames.back().found = true;
        }
        for (NodeId v : comp) {
            blocked[v] = 0;
            blocked_by[v].clear();
        }

        label[s] = -1;
        queue_sccs(tarjan.run(comp, inside));
    }
    return result;
}

std::vector<NodeId> Graph::terminals() const {
    std::vector<NodeId> out;
    for (std::size_t i = 0; i < names_.size(); ++i)
        if (chain_start_[i] == chain_start_[i + 1]) out.push_back(static_cast<NodeId>(i));
    return out;
}

// ---------------------------------------------------------------------------------------
// Longest path. One iterative DFS (roots in id order, children in chain order) classifies
// edges; dropping back edges leaves a DAG whose finish order is a reverse topological
// order, so each node's longest outgoing path is known when it finishes.

std::vector<NodeId> Graph::longest_path() const {
    const std::size_t n = names_.size();
    if (n == 0) return {};
    std::vector<char> color(n, 0);  // 0 unvisited, 1 on the DFS stack, 2 finished
    std::vector<NodeId> length(n, 0);
    // Kept (non-back) successors of v live in chain_ids_'s slots for v: [start, start + kept).
    std::vector<NodeId> kept_ids(chain_ids_.size());
    std::vector<std::uint32_t> kept(n, 0);
    std::vector<std::pair<NodeId, std::uint32_t>> frames;

    for (std::size_t root = 0; root < n; ++root) {
        if (color[root]) continue;
        color[root] = 1;
        frames.emplace_back(static_cast<NodeId>(root), chain_start_[root]);
        while (!frames.empty()) {
            const NodeId v = frames.back().first;
            const std::uint32_t pos = frames.back().second;
            if (pos < chain_start_[v + 1]) {
                ++frames.back().second;
                const NodeId w = chain_ids_[pos];
                if (color[w] == 1) continue;  // back edge (self-loops included)
                kept_ids[chain_start_[v] + kept[v]++] = w;
                if (color[w] == 0) {
                    color[w] = 1;
                    frames.emplace_back(w, chain_start_[w]);
                }
                continue;
            }
            frames.pop_back();
            color[v] = 2;
            NodeId best = 0;
            for (std::uint32_t i = 0; i < kept[v]; ++i)
                best = std::max(best, length[kept_ids[chain_start_[v] + i]] + 1);
            length[v] = best;
        }
    }

    // Lexicographically smallest among the longest: smallest start of maximal length,
    // then at each step the smallest successor that still reaches the full length.
    NodeId v = static_cast<NodeId>(std::max_element(length.begin(), length.end()) - length.begin());
    std::vector<NodeId> path{v};
    while (length[v] > 0) {
        NodeId next = -1;
        for (std::uint32_t i = 0; i < kept[v]; ++i) {
            const NodeId w = kept_ids[chain_start_[v] + i];
            if (length[w] == length[v] - 1 && (next == -1 || w < next)) next = w;
        }
        v = next;
        path.push_back(v);
    }
    return path;
}

// ---------------------------------------------------------------------------------------
// Availability flags

void Graph::set_model_available(NodeId model, bool available) {
    check_model(model);
    model_up_[model].store(available, std::memory_order_relaxed);
}

void Graph::set_provider_available(NodeId provider, bool available) {
    if (provider < 0 || provider >= num_providers_)
        bad("provider id " + std::to_string(provider) + " outside [0, " +
            std::to_string(num_providers_) + ")");
    provider_up_[provider].store(available, std::memory_order_relaxed);
}

bool Graph::model_flag(NodeId model) const {
    check_model(model);
    return model_up_[model].load(std::memory_order_relaxed);
}

bool Graph::provider_flag(NodeId provider) const {
    if (provider < 0 || provider >= num_providers_)
        bad("provider id " + std::to_string(provider) + " outside [0, " +
            std::to_string(num_providers_) + ")");
    return provider_up_[provider].load(std::memory_order_relaxed);
}

bool Graph::is_available(NodeId model) const {
    check_model(model);
    return available_unchecked(model);
}

}  // namespace routekit
