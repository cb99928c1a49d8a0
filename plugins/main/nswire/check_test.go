package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestCheckDetectsDamage breaks one thing ADD made, then expects CHECK to
// fail naming it.
func TestCheckDetectsDamage(t *testing.T) {
	cases := []struct {
		name   string
		words  string
		damage func(t *testing.T, f *fixture, c *container) error
	}{
		{"container address removed", "lacks address", func(t *testing.T, f *fixture, c *container) error {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.ip(true), Mask: net.CIDRMask(24, 32)}}
			return c.ns.Handle().AddrDel(c.ns.Link("eth0"), addr)
		}},
		{"container MTU changed", "MTU", func(t *testing.T, f *fixture, c *container) error {
			return c.ns.Handle().LinkSetMTU(c.ns.Link("eth0"), 1300)
		}},
		{"container MAC changed", "MAC", func(t *testing.T, f *fixture, c *container) error {
			mac, _ := net.ParseMAC("02:00:00:00:00:42")
			return c.ns.Handle().LinkSetHardwareAddr(c.ns.Link("eth0"), mac)
		}},
		{"container down", "down", func(t *testing.T, f *fixture, c *container) error {
			return c.ns.Handle().LinkSetDown(c.ns.Link("eth0"))
		}},
		{"default route removed", "lacks route", func(t *testing.T, f *fixture, c *container) error {
			_, dst, _ := net.ParseCIDR("0.0.0.0/0")
			return c.ns.Handle().RouteDel(&netlink.Route{LinkIndex: c.ns.Link("eth0").Attrs().Index, Dst: dst, Gw: c.gateway(true)})
		}},
		{"host veth off the bridge", "master", func(t *testing.T, f *fixture, c *container) error {
			return f.host.Handle().LinkSetNoMaster(f.host.Link(f.hostVeth(c)))
		}},
		{"host veth deleted", "missing", func(t *testing.T, f *fixture, c *container) error {
			return f.host.Handle().LinkDel(f.host.Link(f.hostVeth(c)))
		}},
		{"bridge down", "down", func(t *testing.T, f *fixture, c *container) error {
			return f.host.Handle().LinkSetDown(f.host.Link(f.bridge))
		}},
		{"gateway removed from bridge", "lacks address", func(t *testing.T, f *fixture, c *container) error {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.gateway(true), Mask: net.CIDRMask(24, 32)}}
			return f.host.Handle().AddrDel(f.host.Link(f.bridge), addr)
		}},
		{"ipam reservation lost", "ipam", func(t *testing.T, f *fixture, c *container) error {
			return os.Remove(filepath.Join(f.host.DataDir, f.name, c.ip(true).String()))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			list := f.list("1.1.0", map[string]any{"mtu": 1400}, "10.40.0.0/24")
			c := f.add(list, "chk")
			if err := f.host.CNI.CheckNetworkList(context.Background(), list, c.rt); err != nil {
				t.Fatalf("CHECK before damage: %v", err)
			}
			if err := tc.damage(t, f, c); err != nil {
				t.Fatalf("damage: %v", err)
			}
			err := f.host.CNI.CheckNetworkList(context.Background(), list, c.rt)
			if err == nil || !strings.Contains(err.Error(), tc.words) {
				t.Errorf("CHECK after %s: got %v, want an error naming %q", tc.name, err, tc.words)
			}
			f.del(list, c)
			f.assertGone(c)
		})
	}
}
