package ipam

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var benchSizes = []int{10, 1000, 10000}

const benchRanges = `[[{"subnet":"10.0.0.0/12"}]]`

// benchDirs: the default temp dir (a real disk here) and, when present,
// tmpfs, which isolates the algorithmic cost.
func benchDirs(b *testing.B) map[string]string {
	dirs := map[string]string{"tempdir": ""}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dirs["tmpfs"] = "/dev/shm"
	}
	return dirs
}

func benchDataDir(b *testing.B, parent string) string {
	if parent == "" {
		return b.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "nswire-bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// populate writes n reservations in host-local's layout (files only);
// withIndex adds nswire's index too.
func populate(b *testing.B, netDir string, n int, withIndex bool) {
	b.Helper()
	if err := os.MkdirAll(filepath.Join(netDir, indexDirName), 0o700); err != nil {
		b.Fatal(err)
	}
	ip := netip.MustParseAddr("10.0.0.1")
	for i := range n {
		ip = ip.Next()
		a := Attachment{ContainerID: fmt.Sprintf("existing%d", i), IfName: "eth0"}
		write(b, filepath.Join(netDir, ip.String()), encodeOwner(a))
		if withIndex {
			write(b, filepath.Join(netDir, indexDirName, indexName(a)), encodeIndex(a, []netip.Addr{ip}))
		}
	}
	write(b, filepath.Join(netDir, lastIPPrefix+"0"), []byte(ip.String()))
	if withIndex {
		version, err := indexVersion()
		if err != nil {
			b.Fatal(err)
		}
		write(b, filepath.Join(netDir, indexDirName, versionFile), []byte(version))
	}
	// Flush setup now, so its writeback does not land in the timed loop.
	unix.Sync()
}

func write(b *testing.B, path string, data []byte) {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAddDel: one in-process ADD and DEL of a new attachment with n
// reservations already in the store.
func BenchmarkAddDel(b *testing.B) {
	for kind, parent := range benchDirs(b) {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", kind, n), func(b *testing.B) {
				dir := benchDataDir(b, parent)
				populate(b, filepath.Join(dir, "testnet"), n, true)
				conf := netConf(b, dir, benchRanges)
				b.ResetTimer()
				for i := range b.N {
					r := req(conf, fmt.Sprintf("bench%d", i), "eth0")
					if _, err := Add(r); err != nil {
						b.Fatal(err)
					}
					if err := Del(r); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkBinaryAddDel compares the nswire-ipam binary with host-local,
// process start included, reporting percentiles of ADD+DEL. Run through
// scripts/bench-ipam.sh (NSWIRE_IPAM_BIN: a build without crash points).
func BenchmarkBinaryAddDel(b *testing.B) {
	plugins := map[string]string{"nswire-ipam": os.Getenv("NSWIRE_IPAM_BIN"), "host-local": hostLocal}
	if plugins["nswire-ipam"] == "" {
		plugins["nswire-ipam"] = pluginBinary(b)
	}
	parent := os.Getenv("NSWIRE_IPAM_BENCH_DIR")
	for _, name := range []string{"nswire-ipam", "host-local"} {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				if _, err := os.Stat(plugins[name]); err != nil {
					b.Skip(err)
				}
				benchBinary(b, plugins[name], benchDataDir(b, parent), n)
			})
		}
	}
}

func benchBinary(b *testing.B, bin, dir string, n int) {
	populate(b, filepath.Join(dir, "testnet"), n, false)
	// Debian's host-local (1.1.1) stops at CNI 1.0.0.
	conf := bytes.Replace(netConf(b, dir, benchRanges), []byte(`"1.1.0"`), []byte(`"1.0.0"`), 1)
	// Warm up: the first nswire-ipam run indexes the host-local layout.
	run(b, pluginCmd(bin, "DEL", "warmup", conf))
	var add, del []time.Duration
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("bench%d", i)
		add = append(add, run(b, pluginCmd(bin, "ADD", id, conf)))
		del = append(del, run(b, pluginCmd(bin, "DEL", id, conf)))
	}
	b.StopTimer()
	report(b, "add", add)
	report(b, "del", del)
}

func run(b *testing.B, cmd interface{ CombinedOutput() ([]byte, error) }) time.Duration {
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	return time.Since(start)
}

func report(b *testing.B, op string, d []time.Duration) {
	slices.Sort(d)
	ms := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))]) / 1e6 }
	b.ReportMetric(ms(0.50), op+"-p50-ms")
	b.ReportMetric(ms(0.99), op+"-p99-ms")
}

// BenchmarkReserveRelease: the disk store's share of one ADD and DEL
// (Reserve, then Release) on the default temp dir; percentiles per
// operation.
func BenchmarkReserveRelease(b *testing.B) {
	stacks := map[string][]netip.Addr{
		"single": {netip.MustParseAddr("10.9.0.1")},
		"dual":   {netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("fd00::1")},
	}
	for _, name := range []string{"single", "dual"} {
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			populate(b, filepath.Join(dir, "testnet"), 1000, true)
			s, err := OpenDiskStore(dir, "testnet")
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if err := s.Lock(); err != nil {
				b.Fatal(err)
			}
			var res, rel []time.Duration
			b.ResetTimer()
			for i := range b.N {
				a := Attachment{ContainerID: fmt.Sprintf("bench%d", i), IfName: "eth0"}
				start := time.Now()
				if err := s.Reserve(a, stacks[name]); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if err := s.Release(a); err != nil {
					b.Fatal(err)
				}
				res, rel = append(res, mid.Sub(start)), append(rel, time.Since(mid))
			}
			b.StopTimer()
			report(b, "reserve", res)
			report(b, "release", rel)
		})
	}
}
