package testutil

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Serve answers every TCP connection or UDP datagram on addr inside n with
// the source address it saw, so a client learns whether it was NATed.
// Stopped when the test ends.
func Serve(t T, n ns.NetNS, network, addr string) {
	t.Helper()
	err := n.Do(func(ns.NetNS) error {
		if strings.HasPrefix(network, "udp") {
			pc, err := net.ListenPacket(network, addr)
			if err != nil {
				return err
			}
			t.Cleanup(func() { pc.Close() })
			go serveUDP(pc)
			return nil
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			return err
		}
		t.Cleanup(func() { ln.Close() })
		go serveTCP(ln)
		return nil
	})
	if err != nil {
		t.Fatalf("serve %s %s: %v", network, addr, err)
	}
}

func serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Write([]byte(host + "\n"))
		c.Close()
	}
}

func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 64)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		host, _, _ := net.SplitHostPort(from.String())
		_, _ = pc.WriteTo([]byte(host+"\n"), from)
	}
}

// Ask connects from n to addr and returns the source address the server
// saw. Within 2 s or an error.
func Ask(n ns.NetNS, network, addr string) (string, error) {
	var reply string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if strings.HasPrefix(network, "udp") {
			if _, err := c.Write([]byte("?")); err != nil {
				return err
			}
		}
		buf := make([]byte, 64)
		k, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("read from %s: %w", addr, err)
		}
		reply = strings.TrimSpace(string(buf[:k]))
		return nil
	})
	return reply, err
}

// Connect proves TCP reachability from `from` to ip: it serves on an
// ephemeral port of ip in `to` and asks from `from`.
func Connect(from, to ns.NetNS, ip net.IP) error {
	var ln net.Listener
	err := to.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		return err
	})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", ip, err)
	}
	defer ln.Close()
	go serveTCP(ln)
	_, err = Ask(from, "tcp", net.JoinHostPort(ip.String(), strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)))
	return err
}

// Throughput sends as fast as possible from `from` to a sink listening on
// addr in `to` and returns the rate in bits/s the receiver measured over a
// 2 s window that starts skip after the first byte: past the initial burst
// a token bucket lets through at line rate.
func Throughput(from, to ns.NetNS, addr string, skip time.Duration) (float64, error) {
	var ln net.Listener
	if err := to.Do(func(ns.NetNS) (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		return 0, err
	}
	defer ln.Close()
	var got atomic.Int64
	first := make(chan struct{})
	go sink(ln, &got, first)
	var c net.Conn
	if err := from.Do(func(ns.NetNS) (err error) { c, err = net.DialTimeout("tcp", addr, time.Second); return }); err != nil {
		return 0, err
	}
	defer c.Close()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return // closed when the measure ends
			}
		}
	}()
	select {
	case <-first:
	case <-time.After(2 * time.Second):
		return 0, fmt.Errorf("no data reached %s", addr)
	}
	time.Sleep(skip)
	c0, t0 := got.Load(), time.Now()
	time.Sleep(2 * time.Second)
	c1, t1 := got.Load(), time.Now()
	return float64(c1-c0) * 8 / t1.Sub(t0).Seconds(), nil
}

// ShapedRate checks that a shaped flow from `from` to addr in `to` runs
// at limit bits/s, within the fractions low and high of it, and returns the
// last rate measured. Every measure must stay under high: no load on the
// machine makes a shaped flow faster. One under low is measured again, up
// to three times in all: a busy machine (the whole suite runs on two
// cores) starves the sender, and the first flow between fresh namespaces
// overshoots in slow start (no cached TCP metrics); neither is the limit.
func ShapedRate(t testing.TB, from, to ns.NetNS, addr string, skip time.Duration, limit, low, high float64) float64 {
	t.Helper()
	var got float64
	for try := 1; try <= 3; try++ {
		var err error
		if got, err = Throughput(from, to, addr, skip); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: measured %.2f Mbit/s, limit %.2f Mbit/s (%.1f%%)", addr, got/1e6, limit/1e6, 100*got/limit)
		if got > limit*high {
			t.Errorf("%s: %.2f Mbit/s exceeds the limit of %.2f Mbit/s by more than %.0f%%", addr, got/1e6, limit/1e6, 100*(high-1))
			return got
		}
		if got >= limit*low {
			return got
		}
	}
	t.Errorf("%s: %.2f Mbit/s stayed under %.0f%% of the limit of %.2f Mbit/s in three measures", addr, got/1e6, 100*low, limit/1e6)
	return got
}

// sink counts what the first connection to ln brings, closing first at
// the first byte.
func sink(ln net.Listener, got *atomic.Int64, first chan struct{}) {
	c, err := ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	once := false
	for {
		n, err := c.Read(buf)
		if n > 0 && !once {
			once = true
			close(first)
		}
		got.Add(int64(n))
		if err != nil {
			return
		}
	}
}
