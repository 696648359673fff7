// The distributed side of `cushion calibrate` (cli_distributed.h).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cli_distributed.h"

namespace cushion::cli {

const char* kDistributedHelp =
    "Across processes (libtorch's c10d: a TCP store for the rendezvous, Gloo for the collectives): every rank\n"
    "loads the model and scores its share of each step's candidates, and takes its share of each tuning batch\n"
    "(gradients summed across ranks); the chosen tokens and L_q are the single process's, the tuned cushion\n"
    "equals it to float rounding. Only rank 0 writes files (--out, --out-greedy, --checkpoint) and prints.\n"
    "  --local-processes N    run as N processes on this machine (loopback; each with cores/N threads)\n"
    "  --world-size N         number of processes in all, on any machines (default 1)\n"
    "  --rank R               this process's rank, 0..N-1; rank 0 listens at --rendezvous\n"
    "  --rendezvous HOST:PORT where rank 0 runs the rendezvous store (default 127.0.0.1:29500); on several\n"
    "                         machines, rank 0's address, and GLOO_SOCKET_IFNAME=<interface> on every rank\n"
    "  --dist-timeout S       seconds to wait for the other ranks at the rendezvous and in each exchange\n"
    "                         (default 300); a failing rank ends all the others at once with its message\n";

const std::set<std::string>& distributed_values() {
    static const std::set<std::string> v{"world-size", "rank", "rendezvous", "dist-timeout", "local-processes"};
    return v;
}

DistributedOptions distributed_from_args(const Args& a) {
    DistributedOptions o;
    o.world_size = static_cast<int>(a.get_int("world-size", 1, 1, 4096));
    o.rank = static_cast<int>(a.get_int("rank", 0, 0, 4095));
    if (o.rank >= o.world_size)
        throw Error("--rank " + std::to_string(o.rank) + " is outside 0.." + std::to_string(o.world_size - 1) +
                    " (--world-size " + std::to_string(o.world_size) + ")");
    if (a.has("rendezvous")) parse_rendezvous(a.get("rendezvous"), &o);
    if (o.world_size == 1 && (a.has("rank") || a.has("rendezvous")) && !a.has("world-size"))
        throw Error("--rank and --rendezvous need --world-size N (the number of processes)");
    o.timeout = std::chrono::milliseconds(
        static_cast<int64_t>(a.get_double("dist-timeout", 300, 1, 7 * 24 * 3600) * 1000));
    return o;
}

namespace {

int free_loopback_port() {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) throw Error(std::string("--local-processes: cannot open a socket: ") + std::strerror(errno));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        const std::string why = std::strerror(errno);
        ::close(s);
        throw Error("--local-processes: cannot find a free port on 127.0.0.1: " + why);
    }
    ::close(s);
    return ntohs(addr.sin_port);
}

int exit_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

}  // namespace

int run_local_processes(int argc, char** argv, int n) {
    if (n < 1 || n > 256) throw Error("--local-processes must be between 1 and 256");
    std::vector<std::string> base{argv[0], argv[1]};
    for (int i = 2; i < argc; ++i) {
        const std::string s = argv[i];
        if (s == "--local-processes") {
            ++i;
            continue;
        }
        if (s.rfind("--local-processes=", 0) == 0) continue;
        for (const char* o : {"--world-size", "--rank", "--rendezvous"})
            if (s == o || s.rfind(std::string(o) + "=", 0) == 0)
                throw Error(std::string("--local-processes sets ") + o + " itself; give one or the other");
        base.push_back(s);
    }
    const std::string rendezvous = "127.0.0.1:" + std::to_string(free_loopback_port());
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    const std::string threads = std::to_string(std::max(1u, cores / unsigned(n)));
    const bool set_threads = std::getenv("OMP_NUM_THREADS") == nullptr;
    std::fflush(stdout);
    std::fflush(stderr);
    std::vector<pid_t> pids;
    for (int r = 0; r < n; ++r) {
        std::vector<std::string> args = base;
        for (const std::string& s : {std::string("--world-size"), std::to_string(n), std::string("--rank"),
                                     std::to_string(r), std::string("--rendezvous"), rendezvous})
            args.push_back(s);
        const pid_t pid = ::fork();
        if (pid < 0) {
            for (pid_t p : pids) ::kill(p, SIGTERM);
            throw Error(std::string("--local-processes: fork failed: ") + std::strerror(errno));
        }
        if (pid == 0) {
            if (set_threads) ::setenv("OMP_NUM_THREADS", threads.c_str(), 1);
            std::vector<char*> cargs;
            for (auto& s : args) cargs.push_back(const_cast<char*>(s.c_str()));
            cargs.push_back(nullptr);
            ::execv("/proc/self/exe", cargs.data());
            std::fprintf(stderr, "cushion calibrate: --local-processes: cannot start rank %d: %s\n", r, std::strerror(errno));
            std::_Exit(127);
        }
        pids.push_back(pid);
    }
    // Wait for all; after the first failure the others normally end by themselves within a second or so
    // (the rendezvous store tells them); SIGTERM whichever is still running 15 s later.
    int first_failure = 0;
    std::vector<bool> running(n, true);
    int left = n;
    auto failed_at = std::chrono::steady_clock::time_point();
    bool terminated = false;
    while (left > 0) {
        int status = 0;
        const pid_t p = ::waitpid(-1, &status, first_failure ? WNOHANG : 0);
        if (p < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p == 0) {
            if (!terminated && std::chrono::steady_clock::now() - failed_at > std::chrono::seconds(15)) {
                for (int r = 0; r < n; ++r)
                    if (running[r]) ::kill(pids[r], SIGTERM);
                terminated = true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            continue;
        }
        for (int r = 0; r < n; ++r) {
            if (pids[r] != p || !running[r]) continue;
            running[r] = false;
            --left;
            const int code = exit_code(status);
            if (code != 0 && first_failure == 0) {
                first_failure = code;
                failed_at = std::chrono::steady_clock::now();
            }
        }
    }
    return first_failure;
}

}  // namespace cushion::cli
