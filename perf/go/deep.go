// deep.go — the Go counterpart of perf/bench_deep_recursion.c: a goroutine recursing to
// 10,000 and n (default 1,000,000) frames of 64-byte frames, twice: the first run grows
// the goroutine stack (copying), the second runs on the grown one.
package main

import (
	"fmt"
	"time"
)

//go:noinline
func drRec(n uint64, acc *uint64) uint64 {
	var pad [3]uint64
	pad[0], pad[1], pad[2] = n, n>>1, n>>2
	*acc += pad[0]
	if n == 0 {
		return pad[1]
	}
	return drRec(n-1, acc) + pad[2]
}

func benchDeep() {
	n := uint64(1000000)
	if args.n > 0 {
		n = uint64(args.n)
	}
	for i, depth := range []uint64{10000, n} {
		var ns [2]time.Duration
		var sum [2]uint64
		done := make(chan struct{})
		go func() {
			for run := 0; run < 2; run++ {
				var acc uint64
				t0 := time.Now()
				sum[run] = drRec(depth, &acc) + acc
				ns[run] = time.Since(t0)
			}
			close(done)
		}()
		<-done
		if sum[0] != sum[1] {
			fail("checksum differs between runs")
		}
		extra := fmt.Sprintf("depth=%d", depth)
		first, second := "deep_1e4_first", "deep_1e4_second"
		if i == 1 {
			first, second = "deep_1e6_first", "deep_1e6_second"
		}
		result(first, "ns_per_frame", float64(ns[0].Nanoseconds())/float64(depth), extra)
		result(second, "ns_per_frame", float64(ns[1].Nanoseconds())/float64(depth), extra)
	}
}
