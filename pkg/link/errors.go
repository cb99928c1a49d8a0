package link

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// ErrKernelFeature marks a request the kernel refused for want of a
// feature: a module not loaded (and not loadable here), or not built.
var ErrKernelFeature = errors.New("the kernel lacks a feature nswire uses")

// FeatureError is the error of a creation (what) that the kernel refused
// for want of the object's kind (EOPNOTSUPP for a link kind, ENOENT for a
// qdisc, filter or action kind), naming the modules to load.
func FeatureError(what, modules string, err error) error {
	return fmt.Errorf("%s: %w: %w: modprobe -a %s", what, err, ErrKernelFeature, modules)
}

// ipv6Refused reports whether err, the answer to adding ipn to a link,
// means the link has IPv6 disabled: the kernel then refuses IPv6
// addresses with EACCES, which is no matter of privilege.
func ipv6Refused(err error, ipn *net.IPNet) bool {
	return errors.Is(err, unix.EACCES) && ipn.IP.To4() == nil
}

// hostAddrError is the error of adding gateway gw to host link name (what
// describes it). nswire does not override a host's disabled IPv6: that
// setting against the network's IPv6 ranges is the configuration's
// conflict to resolve.
func hostAddrError(err error, gw *net.IPNet, what, name string) error {
	if ipv6Refused(err, gw) {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(
			"%s has IPv6 disabled (net.ipv6.conf.%s.disable_ipv6, taken from net.ipv6.conf.default.disable_ipv6 when it was made) but the network's IPv6 range gives it %s: enable IPv6 on the host, or remove the network's IPv6 ranges",
			what, name, gw), err.Error())
	}
	return fmt.Errorf("add gateway %s to %s: %w", gw, what, err)
}
