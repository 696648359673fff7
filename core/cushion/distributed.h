// Calibration across processes and machines: a small communicator over libtorch's own distributed
// backend (c10d: a TCPStore for the rendezvous, ProcessGroupGloo for the collectives).
//
// What is shared out (GreedySearchOptions::comm, PrefixTuneOptions::comm):
//   search  every rank holds the whole model and sample; a scoring pass splits its candidate batches into
//           contiguous ranges, one per rank (all ranks use the smallest batch size any of them would pick,
//           so that every batch holds the same candidates as in one process), and all_gather_doubles puts
//           the losses back together in candidate order on every rank. Each rank then takes the same
//           decision (lowest L_q, ties -> lowest id) from the same numbers. The fast step's screen is shared
//           out the same way: whole screen batches per rank (screen_shard), the estimates gathered, every rank
//           then re-scores the same best K. A batch's losses (and estimates) do not depend
//           on which process scored it: with the same batch size and thread count they are bit-for-bit
//           the ones of one process.
//   tuning  each rank takes a contiguous share of every batch's documents; its CE and L_q are normalised by
//           the whole batch's token and document counts, so that all_reduce_sum of the gradients (in float64)
//           gives the gradient of the whole batch; every rank applies the same Adam update. The result
//           equals one process's up to the order of floating-point sums (tests/integration: distributed).
// Only rank 0 writes files; the others compute and stay quiet.
//
// Failures: a rank that fails calls fail(): its message goes to the store, and every other rank's watcher
// thread (polling the store every 100 ms) prints it and ends its process (exit status 2). A rank that dies
// without a word closes its Gloo connections: the others' next collective fails at once and they report it
// the same way. A rank that hangs ends the others when `timeout` runs out in a collective or the store.
// Everything the engine offers across ranks is collective: every rank calls the same functions in the same
// order with the same settings (check_agree verifies the settings up front).
//
// GPU: the exchanged data is small (one loss per candidate; the prefix's K/V gradients, kilobytes to a few
// MB), so the collectives always run on CPU tensors through Gloo; CUDA tensors are copied to the host and
// back. (NCCL would need one GPU per rank on a machine and gains nothing at these sizes.)
#pragma once
#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cushion {

class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int world_size() const = 0;
    // Every rank's vector (lengths may differ), concatenated in rank order; the same on every rank.
    virtual std::vector<double> all_gather_doubles(const std::vector<double>& mine) = 0;
    // In place: each tensor becomes the sum over ranks (float64 sums; tensors of any float dtype/device).
    virtual void all_reduce_sum(std::vector<at::Tensor>& tensors) = 0;
    // The smallest of every rank's value.
    virtual int64_t all_reduce_min(int64_t v) = 0;
    virtual void barrier() = 0;
    // Throws Error naming the ranks when `value` is not the same on every rank (`what` names it).
    virtual void check_agree(const std::string& what, const std::string& value) = 0;
    // This rank failed with `message`: tells the other ranks (they end with it). Returns the message to show
    // here: `message`, or the first failure another rank reported if that came first. Never throws.
    virtual std::string fail(const std::string& message) = 0;
    // The end of a successful run: every rank calls it (a barrier, then the watcher stops).
    virtual void finish() = 0;
    // "rank R of N" for messages ("" for one process).
    std::string who() const;
};

// One process: rank 0 of 1; the collectives return their input.
std::shared_ptr<Communicator> single_process();

struct DistributedOptions {
    int world_size = 1;
    int rank = 0;
    std::string host = "127.0.0.1";  // the rendezvous: rank 0 listens there (TCPStore), the others connect
    int port = 29500;
    std::chrono::milliseconds timeout{300000};  // rendezvous, store operations and each collective
};

// Parses "HOST:PORT" (IPv4 address or name; "[v6]:PORT" too). Throws Error naming the flag on bad input.
void parse_rendezvous(const std::string& s, DistributedOptions* o, const char* flag = "--rendezvous");

// Whether this build has the Gloo backend (libtorch's ProcessGroupGloo, compiled with Gloo's headers).
bool distributed_available();
// Joins the group: rank 0 starts the store at host:port and waits for the others; every rank then checks
// that its rank is unique and its world size agrees, and connects to every other (Gloo). Throws Error with
// what went wrong (port in use, timed out waiting for ranks, ...). world_size 1 gives single_process().
std::shared_ptr<Communicator> connect(const DistributedOptions& o);

// The [begin, end) share of `count` items of rank r among n: contiguous, in order, sizes differing by at most 1.
std::pair<int64_t, int64_t> shard_range(int64_t count, int rank, int world_size);

}  // namespace cushion
