// cushion/distributed: the shard arithmetic, the rendezvous parser, and two ranks of the Gloo communicator in
// one process (two threads over loopback). The whole distributed calibration against one process is the
// ctest distributed_calibrate (tests/distributed/distributed_check.sh).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <functional>
#include <thread>

#include "base/error.h"
#include "cushion/cushion.h"
#include "cushion/distributed.h"
#include "cushion/greedy_search.h"
#include "cushion/prefix_tuner.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;

namespace {

int free_port() {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len), 0);
    ::close(s);
    return ntohs(a.sin_port);
}

// Runs f(comm) on `world` threads, one rank each; returns each rank's error message ("" when none).
std::vector<std::string> run_ranks(int world, const std::function<void(Communicator&)>& f) {
    const int port = free_port();
    std::vector<std::string> errors(world);
    std::vector<std::thread> ts;
    for (int r = 0; r < world; ++r)
        ts.emplace_back([&, r] {
            try {
                DistributedOptions o;
                o.world_size = world;
                o.rank = r;
                o.port = port;
                o.timeout = std::chrono::milliseconds(20000);
                auto c = connect(o);
                f(*c);
                c->finish();
            } catch (const std::exception& e) {
                errors[r] = e.what();
            }
        });
    for (auto& t : ts) t.join();
    return errors;
}

}  // namespace

TEST(Distributed, ShardRangeCoversEverythingOnceInOrder) {
    for (int64_t count : {0, 1, 5, 16, 509, 49152})
        for (int world : {1, 2, 3, 7}) {
            int64_t next = 0, smallest = count, largest = 0;
            for (int r = 0; r < world; ++r) {
                auto [b, e] = shard_range(count, r, world);
                EXPECT_EQ(b, next);
                EXPECT_LE(b, e);
                smallest = std::min(smallest, e - b);
                largest = std::max(largest, e - b);
                next = e;
            }
            EXPECT_EQ(next, count);
            EXPECT_LE(largest - smallest, 1);
        }
    EXPECT_THROW(shard_range(10, 2, 2), Error);
}

TEST(Distributed, ParsesRendezvous) {
    DistributedOptions o;
    parse_rendezvous("10.1.2.3:29600", &o);
    EXPECT_EQ(o.host, "10.1.2.3");
    EXPECT_EQ(o.port, 29600);
    parse_rendezvous("[::1]:1234", &o);
    EXPECT_EQ(o.host, "::1");
    EXPECT_EQ(o.port, 1234);
    parse_rendezvous("node-7:80", &o);
    EXPECT_EQ(o.host, "node-7");
    for (const char* bad : {"", "host", ":80", "host:", "host:0", "host:70000", "host:8x", "a:b:c", "[::1]80"})
        EXPECT_THROW(parse_rendezvous(bad, &o), Error) << bad;
}

TEST(Distributed, SingleProcessIsTheIdentity) {
    auto c = single_process();
    EXPECT_EQ(c->rank(), 0);
    EXPECT_EQ(c->world_size(), 1);
    EXPECT_EQ(c->all_gather_doubles({1.5, 2.5}), (std::vector<double>{1.5, 2.5}));
    std::vector<at::Tensor> t{at::ones({3})};
    c->all_reduce_sum(t);
    EXPECT_TRUE(at::equal(t[0], at::ones({3})));
    EXPECT_EQ(c->all_reduce_min(7), 7);
    EXPECT_EQ(c->fail("x"), "x");
    DistributedOptions o;  // world size 1: no store, no sockets
    EXPECT_EQ(connect(o)->world_size(), 1);
}

TEST(Distributed, GlooCollectivesAcrossTwoRanks) {
    if (!distributed_available()) GTEST_FAIL() << "built without Gloo (apt-get install libgloo-dev, re-run cmake)";
    std::vector<std::vector<double>> gathered(3);
    std::vector<at::Tensor> sums(3);
    std::vector<int64_t> mins(3);
    auto errors = run_ranks(3, [&](Communicator& c) {
        const int r = c.rank();
        // Unequal lengths: rank r gives r + 1 values r*10, r*10+1, ...
        std::vector<double> mine;
        for (int i = 0; i <= r; ++i) mine.push_back(r * 10 + i + 0.25);
        gathered[r] = c.all_gather_doubles(mine);
        std::vector<at::Tensor> t{at::full({2, 2}, float(r + 1)), at::full({3}, 0.1 * (r + 1), at::kDouble)};
        c.all_reduce_sum(t);
        sums[r] = at::cat({t[0].reshape({-1}).to(at::kDouble), t[1]});
        mins[r] = c.all_reduce_min(100 - r);
        c.check_agree("settings", "same");
        c.barrier();
    });
    const std::vector<double> expect{0.25, 10.25, 11.25, 20.25, 21.25, 22.25};
    for (int r = 0; r < 3; ++r) {
        EXPECT_EQ(errors[r], "") << "rank " << r;
        EXPECT_EQ(gathered[r], expect) << "rank " << r;
        ASSERT_TRUE(sums[r].defined());
        EXPECT_TRUE(at::allclose(sums[r], at::tensor({6.0, 6.0, 6.0, 6.0, 0.6, 0.6, 0.6}, at::kDouble)));
        EXPECT_TRUE(at::equal(sums[r], sums[0]));  // bit for bit the same on every rank
        EXPECT_EQ(mins[r], 98);
    }
}

TEST(Distributed, DisagreementIsAnErrorOnEveryRank) {
    if (!distributed_available()) GTEST_FAIL() << "built without Gloo";
    auto errors = run_ranks(2, [&](Communicator& c) { c.check_agree("tau", c.rank() == 0 ? "0.5" : "0.9"); });
    for (int r = 0; r < 2; ++r) {
        EXPECT_NE(errors[r].find("disagree on the tau"), std::string::npos) << errors[r];
        EXPECT_NE(errors[r].find("'0.9'"), std::string::npos) << errors[r];
    }
}

TEST(Distributed, RankOutOfRangeAndLoneRanksAreRefused) {
    DistributedOptions o;
    o.world_size = 2;
    o.rank = 2;
    EXPECT_THROW(connect(o), Error);
    if (!distributed_available()) return;
    // A lone rank 1 times out at the rendezvous with a message naming it.
    o.rank = 1;
    o.port = free_port();
    o.timeout = std::chrono::milliseconds(1500);
    try {
        connect(o);
        ADD_FAILURE() << "connected without rank 0";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("rendezvous"), std::string::npos) << e.what();
    }
}

// ----------------------------------------------------------------------------------- data-parallel tuning

namespace {
double rel(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-300); }
}  // namespace

TEST(Distributed, SharesOfATuningBatchAddUpToTheBatch) {
    // What each rank computes (its documents, normalised by the whole batch's counts) summed over the shares
    // is the whole batch's loss and gradient: in double precision, up to summation order.
    TinySpec s;
    s.seed = 11;
    s.vocab = 13;
    auto m = make_tiny(s).first;
    m->to(c10::Device(c10::kCPU), at::kDouble);
    Cushion c = make_cushion(*m, {1, 6, 9});
    for (auto* v : {&c.kv.k, &c.kv.v})
        for (auto& x : *v) x = x.to(at::kDouble);
    const std::vector<std::vector<int32_t>> seqs = {
        {5, 7, 3, 8, 4, 9, 10, 6}, {4, 4, 11, 3}, {12, 5, 6, 7, 8, 3}, {9}, {3, 10, 10, 2, 5}};
    QuantLossOptions lo;
    const double lambda = 0.05;
    const TuneLoss whole = prefix_tune_loss(*m, c.kv, seqs, lambda, lo, true);
    int64_t tokens = 0;
    for (const auto& d : seqs) tokens += int64_t(d.size()) - 1;
    EXPECT_EQ(whole.tokens, tokens);
    for (int world : {2, 3, 5}) {
        double ce = 0, lq = 0;
        std::vector<at::Tensor> gk, gv;
        for (int r = 0; r < world; ++r) {
            auto [b, e] = shard_range(seqs.size(), r, world);
            std::vector<std::vector<int32_t>> part(seqs.begin() + b, seqs.begin() + e);
            const TuneLoss p = prefix_tune_loss(*m, c.kv, part, lambda, lo, true, int64_t(64) << 20, tokens, seqs.size());
            ce += p.ce;
            lq += p.lq;
            for (size_t l = 0; l < p.grad_k.size(); ++l) {
                if (gk.size() <= l) {
                    gk.push_back(p.grad_k[l].clone());
                    gv.push_back(p.grad_v[l].clone());
                } else {
                    gk[l] += p.grad_k[l];
                    gv[l] += p.grad_v[l];
                }
            }
        }
        EXPECT_LT(rel(ce, whole.ce), 1e-12) << world;
        EXPECT_LT(rel(lq, whole.lq), 1e-12) << world;
        for (size_t l = 0; l < gk.size(); ++l) {
            EXPECT_LT((gk[l] - whole.grad_k[l]).abs().max().item<double>(), 1e-10 * whole.grad_norm) << world << " " << l;
            EXPECT_LT((gv[l] - whole.grad_v[l]).abs().max().item<double>(), 1e-10 * whole.grad_norm) << world << " " << l;
        }
    }
}

namespace {

// A rank's communicator that records the length of what it gives to all_gather_doubles.
class Recording : public Communicator {
public:
    explicit Recording(std::shared_ptr<Communicator> c) : c_(std::move(c)) {}
    int rank() const override { return c_->rank(); }
    int world_size() const override { return c_->world_size(); }
    std::vector<double> all_gather_doubles(const std::vector<double>& mine) override {
        gave.push_back(mine.size());
        return c_->all_gather_doubles(mine);
    }
    void all_reduce_sum(std::vector<at::Tensor>& t) override { c_->all_reduce_sum(t); }
    int64_t all_reduce_min(int64_t v) override { return c_->all_reduce_min(v); }
    void barrier() override { c_->barrier(); }
    void check_agree(const std::string& what, const std::string& value) override { c_->check_agree(what, value); }
    std::string fail(const std::string& m) override { return c_->fail(m); }
    void finish() override { c_->finish(); }
    std::vector<size_t> gave;

private:
    std::shared_ptr<Communicator> c_;
};

}  // namespace

TEST(Distributed, ScreenShardIsWholeBatchesInOrder) {
    for (size_t n : {0, 1, 7, 26, 509, 49135})
        for (int64_t batch : {1, 4, 64, 1024})
            for (int world : {1, 2, 3, 5}) {
                size_t next = 0;
                for (int r = 0; r < world; ++r) {
                    auto [b, e] = screen_shard(n, batch, r, world);
                    EXPECT_EQ(b, next);
                    EXPECT_LE(b, e);
                    EXPECT_TRUE(b == n || b % batch == 0) << n << " " << batch << " " << r;  // starts on a batch boundary
                    next = e;
                }
                EXPECT_EQ(next, n);
            }
    EXPECT_THROW(screen_shard(10, 0, 0, 1), Error);
}

// The fast step on two ranks: each screens its share of the screen's batches (26 candidates in batches of 4: 7 batches,
// 3 + 4 (shard_range), i.e. 12 + 14 candidates), the estimates gathered are one process's bit for bit, and the re-scored shortlist, losses and choice are the same.
TEST(Distributed, FastStepScreensAShareOnEachRank) {
    if (!distributed_available()) GTEST_FAIL() << "built without Gloo";
    TinySpec spec;
    spec.seed = 4;
    spec.vocab = 29;
    std::shared_ptr<const Model> m = make_tiny(spec).first;
    std::vector<int32_t> sample;
    for (int i = 0; i < 16; ++i) sample.push_back(3 + (i * 7 + 2) % 26);
    GreedySearchOptions o;
    o.screen_batch = 4;
    o.screen_keep = 4;
    const GreedyStepResult one = GreedySearch(m, sample, o).score(StepKind::Fast);
    const int port = free_port();
    std::vector<GreedyStepResult> res(2);
    std::vector<std::vector<size_t>> gave(2);
    std::vector<std::string> errors(2);
    std::vector<std::thread> ts;
    for (int r = 0; r < 2; ++r)
        ts.emplace_back([&, r] {
            try {
                DistributedOptions d;
                d.world_size = 2;
                d.rank = r;
                d.port = port;
                d.timeout = std::chrono::milliseconds(20000);
                auto rec = std::make_shared<Recording>(connect(d));
                GreedySearchOptions ro = o;
                ro.comm = rec;
                res[r] = GreedySearch(m, sample, ro).score(StepKind::Fast);
                gave[r] = rec->gave;
                rec->finish();
            } catch (const std::exception& e) {
                errors[r] = e.what();
            }
        });
    for (auto& t : ts) t.join();
    for (int r = 0; r < 2; ++r) {
        ASSERT_EQ(errors[r], "") << "rank " << r;
        ASSERT_GE(gave[r].size(), 1u);
        EXPECT_EQ(gave[r][0], r == 0 ? 12u : 14u) << "rank " << r << " screened the wrong share";  // 3 and 4 batches
        const GreedyStepResult& x = res[r];
        ASSERT_TRUE(x.window_loss.defined());
        EXPECT_TRUE(at::equal(x.window_loss.isnan(), one.window_loss.isnan()));
        EXPECT_TRUE(at::equal(at::nan_to_num(x.window_loss), at::nan_to_num(one.window_loss))) << "rank " << r;
        EXPECT_EQ(x.shortlist, one.shortlist);
        EXPECT_EQ(x.best_token, one.best_token);
        EXPECT_EQ(x.best_loss, one.best_loss);
        EXPECT_TRUE(at::equal(at::nan_to_num(x.candidate_loss), at::nan_to_num(one.candidate_loss)));
    }
}
