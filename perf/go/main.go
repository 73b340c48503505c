// Command bench_go is the Go counterpart of gort's benchmarks (perf/bench_*.c): the
// same workloads, the same arguments and the same RESULT lines, so perf/run.py can
// put them side by side.
//
//	bench_go <name> procs=N ms=N n=N
//
// procs sets GOMAXPROCS; ms is the time budget of time-bounded loops; n the work count
// of count-bounded ones. Standard library only (built offline, module mode).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

type benchArgs struct {
	procs int
	ms    int64
	n     int64
}

var args = benchArgs{procs: runtime.NumCPU(), ms: 250}

func result(name, metric string, v float64, extra string) {
	if extra != "" {
		extra = " " + extra
	}
	fmt.Printf("RESULT name=%s impl=go procs=%d %s=%.2f%s\n", name, args.procs, metric, v, extra)
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "bench_go: "+format+"\n", a...)
	os.Exit(1)
}

// rssBytes reads the resident set size from /proc/self/statm (second field, pages).
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		fail("statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func deadline() time.Time { return time.Now().Add(time.Duration(args.ms) * time.Millisecond) }

var benches = map[string]func(){
	"chan_pingpong":   benchPingPong,
	"yield":           benchYield,
	"idle_spawn":      benchIdleSpawn,
	"spawn_finish":    benchSpawnFinish,
	"mutex":           benchMutex,
	"select_fanin":    benchSelectFanin,
	"cpu_hash":        benchCPUHash,
	"deep":            benchDeep,
	"preempt_latency": benchPreemptLatency,
}

func main() {
	if len(os.Args) < 2 {
		var names []string
		for k := range benches {
			names = append(names, k)
		}
		sort.Strings(names)
		fail("usage: bench_go <%s> [procs=N] [ms=N] [n=N]", strings.Join(names, "|"))
	}
	if s := os.Getenv("GOMAXPROCS"); s != "" {
		args.procs, _ = strconv.Atoi(s)
	}
	for _, a := range os.Args[2:] {
		kv := strings.SplitN(a, "=", 2)
		if len(kv) != 2 {
			fail("bad argument %q (procs=N ms=N n=N)", a)
		}
		v, err := strconv.ParseInt(kv[1], 10, 64)
		if err != nil {
			fail("bad argument %q", a)
		}
		switch kv[0] {
		case "procs":
			args.procs = int(v)
		case "ms":
			args.ms = v
		case "n":
			args.n = v
		default:
			fail("unknown argument %q", a)
		}
	}
	if args.procs < 1 {
		args.procs = 1
	}
	fn, ok := benches[os.Args[1]]
	if !ok {
		fail("unknown benchmark %q", os.Args[1])
	}
	runtime.GOMAXPROCS(args.procs)
	fn()
}
