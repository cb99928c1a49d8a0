package ipam

import (
	"errors"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Request is one CNI invocation of the IPAM plugin, as skel would hand it.
type Request struct {
	ContainerID string
	IfName      string
	Args        string // CNI_ARGS
	StdinData   []byte // the full network config, as a delegated IPAM plugin receives it
}

// Add reserves one address per range set for (ContainerID, IfName); a
// repeated Add returns the same addresses. The IPs carry no Interface
// index: the caller owns the interface list.
func Add(req Request) (*current.Result, error) {
	cfg, err := ParseConfig(req.StdinData, req.Args)
	if err != nil {
		return nil, err
	}
	return Allocate(cfg, req)
}

// Allocate is Add for a caller that already parsed the configuration
// (ParseConfig); only req's ContainerID and IfName are read.
func Allocate(cfg *Config, req Request) (*current.Result, error) {
	a, err := attachmentOf(req)
	if err != nil {
		return nil, err
	}
	result := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: cfg.Routes}
	if cfg.ResolvConf != "" {
		if result.DNS, err = parseResolvConf(cfg.ResolvConf); err != nil {
			return nil, err
		}
	}
	var leases []Lease
	err = withStore(cfg, true, func(s Store) (err error) {
		leases, err = allocator{store: s, sets: cfg.RangeSets}.allocate(a, cfg.Requested)
		return err
	})
	if err != nil {
		return nil, asCNIError(err, types.ErrIOFailure)
	}
	for _, l := range leases {
		result.IPs = append(result.IPs, ipConfig(l))
	}
	return result, nil
}

// Del releases what (ContainerID, IfName) holds. It only needs the network
// name and dataDir, so it works even after the ranges were edited.
func Del(req Request) error {
	cfg, _, err := parseStoreConfig(req.StdinData)
	if err != nil {
		return err
	}
	a, err := attachmentOf(req)
	if err != nil {
		return err
	}
	return asCNIError(withStore(cfg, false, func(s Store) error { return s.Release(a) }), types.ErrIOFailure)
}

// Check fails (code 3) when the attachment misses its address in any range
// set.
func Check(req Request) error {
	cfg, err := ParseConfig(req.StdinData, req.Args)
	if err != nil {
		return err
	}
	a, err := attachmentOf(req)
	if err != nil {
		return err
	}
	err = withStore(cfg, false, func(s Store) error {
		_, absent, err := allocator{store: s, sets: cfg.RangeSets}.leases(a)
		if err == nil && len(absent) > 0 {
			err = types.NewError(types.ErrUnknownContainer, "no reservation for "+a.ContainerID+"/"+a.IfName+" in range set "+cfg.RangeSets[absent[0]].String(), "")
		}
		return err
	})
	return asCNIError(err, types.ErrIOFailure)
}

// GC releases every reservation of this network whose attachment is not in
// cni.dev/valid-attachments. Legacy host-local entries (no ifname) are kept
// when their container ID is valid.
func GC(req Request) error {
	cfg, n, err := parseStoreConfig(req.StdinData)
	if err != nil {
		return err
	}
	valid := map[Attachment]bool{}
	for _, v := range n.ValidAttachments {
		valid[Attachment{ContainerID: v.ContainerID, IfName: v.IfName}] = true
		valid[Attachment{ContainerID: v.ContainerID}] = true
	}
	keep := func(a Attachment) bool { return valid[a] }
	return asCNIError(withStore(cfg, false, func(s Store) error { return s.GC(keep) }), types.ErrIOFailure)
}

// Status fails with code 50 when the store is unusable or a range set has
// no free address (every ADD would fail, since ADD needs one per set).
func Status(req Request) error {
	cfg, err := ParseConfig(req.StdinData, req.Args)
	if err != nil {
		return err
	}
	err = withStore(cfg, false, func(s Store) error {
		al := allocator{store: s, sets: cfg.RangeSets}
		for i, set := range cfg.RangeSets {
			free, err := al.hasFree(i)
			if err != nil {
				return err
			}
			if !free {
				return types.NewError(types.ErrPluginNotAvailable, "range set "+set.String()+" is exhausted", "")
			}
		}
		return nil
	})
	var te *types.Error
	if err != nil && !(errors.As(err, &te) && te.Code == types.ErrPluginNotAvailable) {
		return types.NewError(types.ErrPluginNotAvailable, "ipam store not usable", err.Error())
	}
	return err
}

func attachmentOf(req Request) (Attachment, error) {
	if err := validContainerID(req.ContainerID); err != nil {
		return Attachment{}, err
	}
	if err := validIfName(req.IfName); err != nil {
		return Attachment{}, err
	}
	return Attachment{ContainerID: req.ContainerID, IfName: req.IfName}, nil
}

// withStore runs fn with the network's disk store locked. Only ADD (create)
// makes the store: the other verbs find nothing to do where there is none,
// and run fn on an empty stand-in. So a store nswire used keeps its index
// until someone removes the directory (see Config.Indexed).
func withStore(cfg *Config, create bool, fn func(Store) error) error {
	if !create && !cfg.exists() {
		return fn(NewMemStore())
	}
	s, err := OpenDiskStore(cfg.DataDir, cfg.Name)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Lock(); err != nil {
		return err
	}
	err = fn(s)
	if uerr := s.Unlock(); err == nil {
		err = uerr
	}
	return err
}

func ipConfig(l Lease) *current.IPConfig {
	c := &current.IPConfig{Address: net.IPNet{
		IP:   net.IP(l.IP.AsSlice()),
		Mask: net.CIDRMask(l.Range.Subnet.Bits(), l.IP.BitLen()),
	}}
	if l.Range.Gateway.IsValid() {
		c.Gateway = net.IP(l.Range.Gateway.AsSlice())
	}
	return c
}
