package testutil

import (
	"fmt"
	"net"
	"strconv"
	"strings"
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
