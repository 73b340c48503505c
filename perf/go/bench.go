package main

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// (a) Unbuffered channel ping-pong: ns per one-way handoff.
func benchPingPong() {
	ping := make(chan int64)
	pong := make(chan int64)
	done := make(chan struct{})
	go func() {
		for v := range ping {
			pong <- v
		}
		close(done)
	}()
	round := func(i int64) {
		ping <- i
		if v := <-pong; v != i {
			fail("ping-pong: got %d want %d", v, i)
		}
	}
	var i int64
	for ; i < 10000; i++ {
		round(i)
	}
	t0 := time.Now()
	end := t0.Add(time.Duration(args.ms) * time.Millisecond)
	var rounds int64
	var t1 time.Time
	for {
		for k := 0; k < 1024; k++ {
			round(i)
			i++
		}
		rounds += 1024
		t1 = time.Now()
		if !t1.Before(end) {
			break
		}
	}
	close(ping)
	<-done
	result("chan_pingpong", "ns_per_op", float64(t1.Sub(t0).Nanoseconds())/(2*float64(rounds)), "")
}

// (b) Two goroutines calling runtime.Gosched: ns per yield.
func benchYield() {
	for round := 0; round < 2; round++ {
		ms := int64(20)
		if round == 1 {
			ms = args.ms
		}
		var stop int32
		var total int64
		var wg sync.WaitGroup
		t0 := time.Now()
		end := t0.Add(time.Duration(ms) * time.Millisecond)
		wg.Add(2)
		for g := 0; g < 2; g++ {
			go func() {
				var n int64
				for atomic.LoadInt32(&stop) == 0 {
					for k := 0; k < 1024; k++ {
						runtime.Gosched()
					}
					n += 1024
					if !time.Now().Before(end) {
						atomic.StoreInt32(&stop, 1)
					}
				}
				atomic.AddInt64(&total, n)
				wg.Done()
			}()
		}
		wg.Wait()
		if round == 1 {
			result("yield", "ns_per_op", float64(time.Since(t0).Nanoseconds())/float64(total), "")
		}
	}
}

// (c) One million idle goroutines blocked on one channel, cold then warm.
func benchIdleSpawn() {
	n := args.n
	if n <= 0 {
		n = 1000000
	}
	type roundResult struct {
		spawn, exit    time.Duration
		rssBef, rssAft int64
		live           int
	}
	doRound := func() roundResult {
		var r roundResult
		ch := make(chan struct{})
		var started int64
		var wg sync.WaitGroup
		r.rssBef = rssBytes()
		wg.Add(int(n))
		t0 := time.Now()
		for i := int64(0); i < n; i++ {
			go func() {
				atomic.AddInt64(&started, 1)
				if _, ok := <-ch; ok {
					fail("idle: received a value")
				}
				wg.Done()
			}()
		}
		for atomic.LoadInt64(&started) < n {
			runtime.Gosched()
		}
		t1 := time.Now()
		r.rssAft = rssBytes()
		r.live = runtime.NumGoroutine()
		close(ch)
		wg.Wait()
		r.spawn = t1.Sub(t0)
		r.exit = time.Since(t1)
		return r
	}
	cold := doRound()
	warm := doRound()
	if cold.live < int(n) || warm.live < int(n) {
		fail("idle: NumGoroutine below n")
	}
	result("idle_spawn_cold", "ns_per_op", float64(cold.spawn.Nanoseconds())/float64(n), "")
	result("idle_spawn_warm", "ns_per_op", float64(warm.spawn.Nanoseconds())/float64(n), "")
	result("idle_rss", "bytes_per_task", float64(cold.rssAft-cold.rssBef)/float64(n), "")
	result("idle_exit", "ns_per_op", float64(warm.exit.Nanoseconds())/float64(n), "")
}

// (d) Spawn n goroutines that mark a WaitGroup done, and wait: ns per goroutine.
func benchSpawnFinish() {
	n := args.n
	if n <= 0 {
		n = 1000000
	}
	doRound := func(n int64) time.Duration {
		var wg sync.WaitGroup
		t0 := time.Now()
		wg.Add(int(n))
		for i := int64(0); i < n; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
		return time.Since(t0)
	}
	doRound(n/10 + 1)
	d := doRound(n)
	result("spawn_finish", "ns_per_op", float64(d.Nanoseconds())/float64(n), "")
}

// (e) Contended sync.Mutex: 4 goroutines, ns per lock/unlock.
func benchMutex() {
	var mu sync.Mutex
	for round := 0; round < 2; round++ {
		ms := int64(20)
		if round == 1 {
			ms = args.ms
		}
		var counter, ops int64
		var wg sync.WaitGroup
		t0 := time.Now()
		end := t0.Add(time.Duration(ms) * time.Millisecond)
		wg.Add(4)
		for g := 0; g < 4; g++ {
			go func() {
				var n int64
				for {
					for k := 0; k < 256; k++ {
						mu.Lock()
						counter++
						mu.Unlock()
					}
					n += 256
					if !time.Now().Before(end) {
						break
					}
				}
				atomic.AddInt64(&ops, n)
				wg.Done()
			}()
		}
		wg.Wait()
		d := time.Since(t0)
		if counter != ops {
			fail("mutex: lost update")
		}
		if round == 1 {
			result("mutex", "ns_per_op", float64(d.Nanoseconds())/float64(ops), "")
		}
	}
}

// (f) Select fan-in: 4 producers on unbuffered channels, one consumer selecting.
func benchSelectFanin() {
	doRound := func(ms int64) float64 {
		var stop int32
		var sent int64
		chs := make([]chan int64, 4)
		for i := range chs {
			chs[i] = make(chan int64)
		}
		t0 := time.Now()
		end := t0.Add(time.Duration(ms) * time.Millisecond)
		for _, c := range chs {
			go func(c chan int64) {
				var n int64
				for atomic.LoadInt32(&stop) == 0 {
					c <- 1
					n++
				}
				atomic.AddInt64(&sent, n)
				close(c)
			}(c)
		}
		c0, c1, c2, c3 := chs[0], chs[1], chs[2], chs[3]
		var got, sum int64
		open := 4
		for open > 0 {
			var v int64
			var ok bool
			select {
			case v, ok = <-c0:
				if !ok {
					c0 = nil
				}
			case v, ok = <-c1:
				if !ok {
					c1 = nil
				}
			case v, ok = <-c2:
				if !ok {
					c2 = nil
				}
			case v, ok = <-c3:
				if !ok {
					c3 = nil
				}
			}
			if !ok {
				open--
				continue
			}
			got++
			sum += v
			if got&1023 == 0 && !time.Now().Before(end) {
				atomic.StoreInt32(&stop, 1)
			}
		}
		d := time.Since(t0)
		if got != atomic.LoadInt64(&sent) || sum != got {
			fail("select fan-in: received != sent")
		}
		return float64(d.Nanoseconds()) / float64(got)
	}
	doRound(20)
	result("select_fanin", "ns_per_op", doRound(args.ms), "")
}

// (g) CPU-bound: 64 goroutines, each a chain of n dependent splitmix64 steps.
func cpuChain(x uint64, steps int64) uint64 {
	for i := int64(0); i < steps; i++ {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		x = z ^ (z >> 31)
	}
	return x
}

func benchCPUHash() {
	steps := args.n
	if steps <= 0 {
		steps = 1 << 19
	}
	var out [64]uint64
	var wg sync.WaitGroup
	t0 := time.Now()
	wg.Add(64)
	for i := 0; i < 64; i++ {
		go func(i int) {
			out[i] = cpuChain(uint64(i)+1, steps)
			wg.Done()
		}(i)
	}
	wg.Wait()
	d := time.Since(t0)
	var check uint64
	for _, v := range out {
		check ^= v
	}
	result("cpu_hash", "ns_per_op", float64(d.Nanoseconds())/(64*float64(steps)),
		"check="+fmtHex(check))
}

func fmtHex(v uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
	return string(b[:])
}
