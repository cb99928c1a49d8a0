package testutil

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Connect proves TCP reachability: it listens in `to` on ip, dials from
// `from` and exchanges a message. Traffic stays between test namespaces.
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
	go serveEcho(ln)
	port := ln.Addr().(*net.TCPAddr).Port
	return from.Do(func(ns.NetNS) error {
		return dialEcho("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
	})
}

func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			_, _ = io.CopyN(c, c, 5)
		}()
	}
}

func dialEcho(network, addr string) error {
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		return err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read echo from %s: %w", addr, err)
	}
	return nil
}
