// How long the GUI thread stalls, for the GUI tests: a 5 ms timer runs on it, and the gap between two of its ticks is
// how long the thread could not handle an event. On a shared machine part of a gap can be time the thread spent
// runnable but waiting for a CPU (the kernel's /proc/thread-self/schedstat, 2nd field); `own_ms` leaves that out.
// tests/perf/bench_gui_stall.cpp is the profiler that breaks a gap down further (events, system calls).
#pragma once

#include <QElapsedTimer>
#include <QObject>
#include <QTimer>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

class StallMeter {
public:
    struct Stall {
        qint64 gap_ms = 0;  // between two ticks
        qint64 own_ms = 0;  // the same less the time the GUI thread waited for a CPU
        int action = -1;    // setAction()'s index when the gap ended (-1: none)
        std::string what;
    };

    // Gaps whose own_ms is over `record_over_ms` are kept in stalls() (-1: none are kept). Constructed on the GUI thread.
    explicit StallMeter(qint64 record_over_ms = -1) : record_over_ms_(record_over_ms) {
        fd_ = open("/proc/thread-self/schedstat", O_RDONLY);
        QObject::connect(&timer_, &QTimer::timeout, [this] { tick(); });
        clock_.start();
    }
    ~StallMeter() {
        if (fd_ >= 0) close(fd_);
    }
    StallMeter(const StallMeter&) = delete;
    StallMeter& operator=(const StallMeter&) = delete;

    // Starts measuring, forgetting what an earlier start() measured.
    void start() {
        gap_ = own_ = Stall{};
        stalls_.clear();
        ticks_ = 0;
        last_ns_ = clock_.nsecsElapsed();
        last_wait_ = runQueueWaitNs();
        timer_.start(5);
    }
    // Stops; the gap still open counts (a stall that lasts until stop() is a stall). Returns the longest gap in ms.
    qint64 stop() {
        if (timer_.isActive()) tick();
        timer_.stop();
        return gap_.gap_ms;
    }

    void setAction(int index, const std::string& what) {
        action_ = index;
        what_ = what;
    }
    // Called on every tick (the monkey test's watchdog reads it as the GUI thread's heartbeat).
    void onTick(std::function<void()> f) { on_tick_ = std::move(f); }

    const Stall& longestGap() const { return gap_; }
    const Stall& longestOwn() const { return own_; }
    const std::vector<Stall>& stalls() const { return stalls_; }
    int over(qint64 ms) const {
        return int(std::count_if(stalls_.begin(), stalls_.end(), [&](const Stall& s) { return s.own_ms > ms; }));
    }
    qint64 ticks() const { return ticks_; }

private:
    qint64 runQueueWaitNs() const {
        char buf[128] = {};
        long long cpu = 0, wait = 0;
        if (fd_ >= 0 && pread(fd_, buf, sizeof buf - 1, 0) > 0) std::sscanf(buf, "%lld %lld", &cpu, &wait);
        return wait;
    }
    void tick() {
        const qint64 now = clock_.nsecsElapsed();
        const qint64 wait = runQueueWaitNs();
        Stall s;
        s.gap_ms = (now - last_ns_) / 1000000;
        s.own_ms = std::max<qint64>(0, (now - last_ns_ - (wait - last_wait_)) / 1000000);
        s.action = action_;
        s.what = what_;
        if (s.gap_ms > gap_.gap_ms) gap_ = s;
        if (s.own_ms > own_.own_ms) own_ = s;
        if (record_over_ms_ >= 0 && s.own_ms > record_over_ms_) stalls_.push_back(s);
        last_ns_ = now;
        last_wait_ = wait;
        ++ticks_;
        if (on_tick_) on_tick_();
    }

    QTimer timer_;
    QElapsedTimer clock_;
    int fd_ = -1;
    qint64 record_over_ms_;
    qint64 last_ns_ = 0, last_wait_ = 0, ticks_ = 0;
    int action_ = -1;
    std::string what_ = "start-up";
    Stall gap_, own_;
    std::vector<Stall> stalls_;
    std::function<void()> on_tick_;
};
