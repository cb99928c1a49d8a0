package link

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// The kernel refuses an IPv6 address on a link with IPv6 disabled with
// EACCES: on the host that is a configuration conflict (7) naming the
// sysctl, not a matter of privilege; an IPv4 EACCES stays what it is.
func TestHostAddrError(t *testing.T) {
	_, v6, _ := net.ParseCIDR("fd00::1/64")
	var te *types.Error
	err := hostAddrError(unix.EACCES, v6, `bridge "br0"`, "br0")
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "net.ipv6.conf.br0.disable_ipv6") {
		t.Errorf("IPv6 EACCES: %v, want code 7 naming the sysctl", err)
	}
	_, v4, _ := net.ParseCIDR("10.0.0.1/24")
	err = hostAddrError(unix.EACCES, v4, `bridge "br0"`, "br0")
	if errors.As(err, &te) || !errors.Is(err, unix.EACCES) {
		t.Errorf("IPv4 EACCES: %v, want the errno kept", err)
	}
}

func TestFeatureError(t *testing.T) {
	err := FeatureError(`create veth "nsw0"`, "veth", unix.EOPNOTSUPP)
	if !errors.Is(err, ErrKernelFeature) || !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(err.Error(), "modprobe -a veth") {
		t.Errorf("%v: want a missing feature naming the module", err)
	}
}
