#include "cushion/distributed.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <c10/util/Exception.h>
#include <c10/util/Logging.h>

#include "base/error.h"

#if CUSHION_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace cushion {

std::string Communicator::who() const {
    return world_size() > 1 ? "rank " + std::to_string(rank()) + " of " + std::to_string(world_size()) : std::string();
}

std::pair<int64_t, int64_t> shard_range(int64_t count, int rank, int world_size) {
    if (world_size < 1 || rank < 0 || rank >= world_size) throw Error("shard_range: bad rank or world size");
    return {count * rank / world_size, count * (rank + 1) / world_size};
}

void parse_rendezvous(const std::string& s, DistributedOptions* o, const char* flag) {
    std::string host, port;
    if (!s.empty() && s[0] == '[') {
        const size_t close = s.find(']');
        if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
            throw Error(std::string(flag) + ": '" + s + "' is not HOST:PORT (e.g. 10.0.0.1:29500 or [::1]:29500)");
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        const size_t colon = s.rfind(':');
        if (colon == std::string::npos || colon == 0 || s.find(':') != colon)
            throw Error(std::string(flag) + ": '" + s + "' is not HOST:PORT (e.g. 10.0.0.1:29500)");
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
    }
    if (host.empty() || port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
        throw Error(std::string(flag) + ": '" + s + "' is not HOST:PORT with a port number");
    const int p = std::stoi(port);
    if (p < 1 || p > 65535) throw Error(std::string(flag) + ": port " + port + " is outside 1-65535");
    o->host = host;
    o->port = p;
}

namespace {

class SingleProcess final : public Communicator {
public:
    int rank() const override { return 0; }
    int world_size() const override { return 1; }
    std::vector<double> all_gather_doubles(const std::vector<double>& mine) override { return mine; }
    void all_reduce_sum(std::vector<at::Tensor>&) override {}
    int64_t all_reduce_min(int64_t v) override { return v; }
    void barrier() override {}
    void check_agree(const std::string&, const std::string&) override {}
    std::string fail(const std::string& message) override { return message; }
    void finish() override {}
};

}  // namespace

std::shared_ptr<Communicator> single_process() { return std::make_shared<SingleProcess>(); }

#if CUSHION_WITH_GLOO

namespace {

std::string what_of(const std::exception& e) {
    if (auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
    return e.what();
}

std::vector<uint8_t> bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
std::string text(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

bool is_loopback(const std::string& h) { return h == "localhost" || h == "::1" || h.rfind("127.", 0) == 0; }

const char* const kAbort = "cushion/abort";          // the first failure's message
const char* const kAbortCount = "cushion/abort_count";  // failures so far
const char* const kAbortAck = "cushion/abort_ack";      // ranks other than 0 that read the message

class GlooCommunicator final : public Communicator {
public:
    explicit GlooCommunicator(const DistributedOptions& o) : o_(o) {
        // c10d logs each failure it raises (with a C++ stack trace) before the exception reaches us; the
        // messages here carry the same text. TORCH_CPP_LOG_LEVEL, when set, keeps libtorch's own logging.
        if (!std::getenv("TORCH_CPP_LOG_LEVEL")) FLAGS_caffe2_log_level = 3;  // fatal only
        const std::string where = o_.host + ":" + std::to_string(o_.port);
        const long secs = long(o_.timeout.count() / 1000);
        c10d::TCPStoreOptions so;
        so.port = static_cast<uint16_t>(o_.port);
        so.isServer = o_.rank == 0;
        so.numWorkers = o_.world_size;
        so.waitWorkers = true;
        so.timeout = o_.timeout;
        try {
            store_ = c10::make_intrusive<c10d::TCPStore>(o_.host, so);
        } catch (const std::exception& e) {
            throw Error(who() + ": the rendezvous at " + where + " failed" +
                        (o_.rank == 0 ? " (rank 0 starts the store there and waits " + std::to_string(secs) +
                                            " s for all " + std::to_string(o_.world_size) + " ranks)"
                                      : " (rank 0 must be listening there; waited " + std::to_string(secs) + " s)") +
                        ": " + what_of(e));
        }
        try {
            if (store_->add("cushion/rank/" + std::to_string(o_.rank), 1) != 1)
                throw Error(who() + ": another process already joined the rendezvous at " + where + " as rank " +
                            std::to_string(o_.rank) + "; give each process its own --rank");
            // The watcher's own connection (the store client is not shared between threads).
            c10d::TCPStoreOptions wo;
            wo.port = so.port;
            wo.isServer = false;
            wo.waitWorkers = false;
            wo.timeout = o_.timeout;
            watch_store_ = c10::make_intrusive<c10d::TCPStore>(o_.host, wo);
        } catch (const Error&) {
            throw;
        } catch (const std::exception& e) {
            throw Error(who() + ": the rendezvous store at " + where + ": " + what_of(e));
        }
        watcher_ = std::thread([this] { watch(); });
        try {
            check_agree("world size", std::to_string(o_.world_size));
            auto opts = c10d::ProcessGroupGloo::Options::create(o_.timeout);
            if (is_loopback(o_.host))
                opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
            else
                opts = c10d::ProcessGroupGloo::Options::create_default(o_.timeout);  // GLOO_SOCKET_IFNAME or hostname
            pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, o_.rank, o_.world_size, opts);
        } catch (const Error&) {
            stop_watcher();
            throw;
        } catch (const std::exception& e) {
            stop_watcher();
            throw Error(who() + ": connecting to the other ranks (Gloo) failed: " + what_of(e) +
                        (is_loopback(o_.host) ? "" : " (set GLOO_SOCKET_IFNAME to the network interface to use)"));
        }
    }

    ~GlooCommunicator() override { stop_watcher(); }

    int rank() const override { return o_.rank; }
    int world_size() const override { return o_.world_size; }

    std::vector<double> all_gather_doubles(const std::vector<double>& mine) override {
        const int n = o_.world_size;
        std::vector<int64_t> lens(n);
        collective("all_gather", [&] {
            std::vector<at::Tensor> in{at::full({1}, (int64_t)mine.size(), at::kLong)};
            std::vector<std::vector<at::Tensor>> out(1);
            for (int r = 0; r < n; ++r) out[0].push_back(at::empty({1}, at::kLong));
            pg_->allgather(out, in)->wait();
            for (int r = 0; r < n; ++r) lens[r] = out[0][r].item<int64_t>();
        });
        const int64_t longest = std::max<int64_t>(1, *std::max_element(lens.begin(), lens.end()));
        std::vector<double> all;
        collective("all_gather", [&] {
            at::Tensor mine_t = at::zeros({longest}, at::kDouble);
            std::copy(mine.begin(), mine.end(), mine_t.data_ptr<double>());
            std::vector<at::Tensor> in{mine_t};
            std::vector<std::vector<at::Tensor>> out(1);
            for (int r = 0; r < n; ++r) out[0].push_back(at::empty({longest}, at::kDouble));
            pg_->allgather(out, in)->wait();
            for (int r = 0; r < n; ++r) {
                const double* p = out[0][r].data_ptr<double>();
                all.insert(all.end(), p, p + lens[r]);
            }
        });
        return all;
    }

    void all_reduce_sum(std::vector<at::Tensor>& tensors) override {
        if (tensors.empty()) return;
        std::vector<at::Tensor> flat;
        for (const auto& t : tensors) flat.push_back(t.detach().to(at::kCPU, at::kDouble).reshape({-1}));
        at::Tensor buf = at::cat(flat).contiguous();
        collective("all_reduce", [&] {
            std::vector<at::Tensor> v{buf};
            pg_->allreduce(v)->wait();
        });
        int64_t off = 0;
        for (auto& t : tensors) {
            const int64_t k = t.numel();
            t.copy_(buf.narrow(0, off, k).view(t.sizes()));
            off += k;
        }
    }

    int64_t all_reduce_min(int64_t v) override {
        at::Tensor t = at::full({1}, v, at::kLong);
        collective("all_reduce", [&] {
            std::vector<at::Tensor> ts{t};
            c10d::AllreduceOptions ao;
            ao.reduceOp = c10d::ReduceOp::MIN;
            pg_->allreduce(ts, ao)->wait();
        });
        return t.item<int64_t>();
    }

    void barrier() override {
        collective("barrier", [&] { pg_->barrier()->wait(); });
    }

    void check_agree(const std::string& what, const std::string& value) override {
        const std::string base = "cushion/agree/" + std::to_string(agree_seq_++) + "/";
        std::vector<std::string> keys;
        for (int r = 0; r < o_.world_size; ++r) keys.push_back(base + std::to_string(r));
        std::vector<std::string> values;
        try {
            store_->set(keys[o_.rank], bytes(value));
            store_->wait(keys, o_.timeout);
            for (const auto& k : keys) values.push_back(text(store_->get(k)));
        } catch (const std::exception& e) {
            throw Error(who() + ": comparing the " + what + " with the other ranks failed: " + what_of(e));
        }
        std::string differ;
        for (int r = 1; r < o_.world_size; ++r)
            if (values[r] != values[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
        if (!differ.empty())
            throw Error("the ranks disagree on the " + what + ": rank 0 has '" + values[0] + "', rank(s) " + differ +
                        " differ (e.g. rank " + differ.substr(0, differ.find(',')) + ": '" +
                        values[std::stoi(differ.substr(0, differ.find(',')))] +
                        "'); every rank needs the same model, calibration text and settings");
    }

    std::string fail(const std::string& message) override {
        failing_ = true;
        std::string shown = message;
        try {
            const int64_t n = store_->add(kAbortCount, 1);
            if (n == 1) {
                store_->set(kAbort, bytes("rank " + std::to_string(o_.rank) + ": " + message));
            } else {
                store_->wait({kAbort}, std::chrono::milliseconds(3000));
                const std::string first = text(store_->get(kAbort));
                const std::string mine = "rank " + std::to_string(o_.rank) + ": " + message;
                shown = first.size() > message.size() && first.compare(first.size() - message.size(), message.size(), message) == 0
                            ? first
                            : first + " (and then " + mine + ")";
            }
            if (o_.rank != 0) {
                store_->add(kAbortAck, 1);
            } else {
                // Rank 0 holds the store: give the others up to 3 s to read the message before it goes.
                const auto t0 = std::chrono::steady_clock::now();
                while (store_->add(kAbortAck, 0) < o_.world_size - 1 &&
                       std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3))
                    std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
        } catch (const std::exception&) {
            // The store is gone (rank 0 ended): nothing more to tell anyone.
        }
        stop_watcher();
        return shown;
    }

    void finish() override {
        // Stop watching before the last barrier: past it rank 0 may end (and its store with it) at any time.
        stop_watcher();
        barrier();
    }

private:
    template <class F>
    void collective(const char* what, F&& f) {
        try {
            f();
        } catch (const std::exception& e) {
            // Usually another rank failed and closed its connections: its message reaches the watcher in a
            // moment, and the watcher ends this process with it. Otherwise report this failure.
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
            throw Error(who() + ": the " + what + " with the other ranks failed (did another rank end?): " + what_of(e));
        }
    }

    void watch() {
        while (!stop_) {
            bool aborted = false;
            try {
                aborted = watch_store_->check({kAbort});
            } catch (const std::exception& e) {
                if (stop_ || failing_) return;
                std::fprintf(stderr, "cushion: %s: lost the rendezvous store at %s:%d (did rank 0 end?): %s\n",
                             who().c_str(), o_.host.c_str(), o_.port, what_of(e).c_str());
                std::fflush(stderr);
                std::_Exit(2);
            }
            if (aborted && !failing_ && !stop_) {
                std::string m = "another rank failed";
                try {
                    m = text(watch_store_->get(kAbort));
                    if (o_.rank != 0) watch_store_->add(kAbortAck, 1);
                } catch (const std::exception&) {
                }
                std::fprintf(stderr, "cushion: %s: stopping, because %s\n", who().c_str(), m.c_str());
                std::fflush(stderr);
                std::_Exit(2);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }

    void stop_watcher() {
        stop_ = true;
        if (watcher_.joinable() && watcher_.get_id() != std::this_thread::get_id()) watcher_.join();
    }

    DistributedOptions o_;
    c10::intrusive_ptr<c10d::TCPStore> store_, watch_store_;
    c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
    std::thread watcher_;
    std::atomic<bool> stop_{false}, failing_{false};
    int agree_seq_ = 0;
};

}  // namespace

bool distributed_available() { return true; }

std::shared_ptr<Communicator> connect(const DistributedOptions& o) {
    if (o.world_size < 1) throw Error("--world-size must be at least 1");
    if (o.rank < 0 || o.rank >= o.world_size)
        throw Error("--rank " + std::to_string(o.rank) + " is outside 0.." + std::to_string(o.world_size - 1));
    if (o.world_size == 1) return single_process();
    return std::make_shared<GlooCommunicator>(o);
}

#else  // !CUSHION_WITH_GLOO

bool distributed_available() { return false; }

std::shared_ptr<Communicator> connect(const DistributedOptions& o) {
    if (o.world_size <= 1) return single_process();
    throw Error("this build has no distributed calibration: it was configured without Gloo's headers "
                "(apt-get install libgloo-dev, then re-run cmake)");
}

#endif

}  // namespace cushion
