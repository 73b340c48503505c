// preempt.go — the Go counterpart of perf/bench_preempt_latency.c (issue 4), run with
// GOMAXPROCS=1 (procs=1): a goroutine sleeping 1 ms, n times (default and at most 500), beside 1 and then 4
// spinners whose loops make no call (Go 1.14+ preempts them asynchronously, by SIGURG
// from sysmon after 10 ms); its lateness in µs (median, p99, max). Then Jain's fairness
// index of 4 spinners over 2 s. The same RESULT lines as the C program.
package main

import (
	"fmt"
	"sort"
	"sync/atomic"
	"time"
)

const preemptSleeps = 500

var preemptStop int32
var preemptCounts [4]uint64

// preemptSpin counts until stopped; the atomic load compiles to a plain MOV (no call,
// no preemption point: only asynchronous preemption can take the P from it).
func preemptSpin(i int) {
	var n uint64
	for atomic.LoadInt32(&preemptStop) == 0 {
		n++
		atomic.StoreUint64(&preemptCounts[i], n)
	}
}

func preemptLatency(nspin int) []time.Duration {
	atomic.StoreInt32(&preemptStop, 0)
	for i := 0; i < nspin; i++ {
		go preemptSpin(i)
	}
	n := preemptSleeps
	if args.n > 0 && args.n < preemptSleeps {
		n = int(args.n)
	}
	late := make([]time.Duration, n)
	done := make(chan struct{})
	go func() {
		for i := range late {
			t0 := time.Now()
			time.Sleep(time.Millisecond)
			late[i] = time.Since(t0) - time.Millisecond
		}
		close(done)
	}()
	<-done
	atomic.StoreInt32(&preemptStop, 1)
	time.Sleep(50 * time.Millisecond) // the spinners see stop and exit
	sort.Slice(late, func(a, b int) bool { return late[a] < late[b] })
	return late
}

func benchPreemptLatency() {
	for _, nspin := range []int{1, 4} {
		late := preemptLatency(nspin)
		us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
		n := len(late)
		extra := fmt.Sprintf("spinners=%d sleeps=%d p99_us=%.1f", nspin, n, us(late[n*99/100]))
		result(fmt.Sprintf("preempt_late_median_%d", nspin), "value", us(late[n/2]), extra)
		result(fmt.Sprintf("preempt_late_max_%d", nspin), "value", us(late[n-1]), extra)
	}
	atomic.StoreInt32(&preemptStop, 0)
	for i := range preemptCounts {
		atomic.StoreUint64(&preemptCounts[i], 0)
	}
	for i := range preemptCounts {
		go preemptSpin(i)
	}
	time.Sleep(2 * time.Second)
	atomic.StoreInt32(&preemptStop, 1)
	var s, s2 float64
	for i := range preemptCounts {
		c := float64(atomic.LoadUint64(&preemptCounts[i]))
		s += c
		s2 += c * c
	}
	jain := 0.0
	if s2 > 0 {
		jain = s * s / (float64(len(preemptCounts)) * s2)
	}
	fmt.Printf("RESULT name=preempt_jain impl=go procs=%d value=%.4f spinners=4 seconds=2\n",
		args.procs, jain) // four decimals: the goal is 0.99
}
