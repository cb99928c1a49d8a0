// Package intent keeps, for each attachment, what its ADD applied to the
// host beyond the veth pair: firewall elements and shaping. A host whose
// firewall is reloaded (`nft flush ruleset`, firewalld, an
// iptables-restore) loses them while the container runs; nswire-restore
// applies them again from here.
//
// One file per attachment, <dataDir>/.nswire-intents/<network>/<tag>.json,
// beside the IPAM reservations of the same dataDir (".nswire-intents"
// cannot be a network name, which starts with a letter or digit). ADD
// writes it (a temporary file renamed into place: a reader or a kill never
// sees half of one), DEL and GC remove it. Nothing here needs to outlive a
// reboot, which takes the containers with it, so nothing is synced.
package intent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nswire/nswire/pkg/ident"
)

// Intent is one attachment's applied state, in plain JSON types.
type Intent struct {
	Network     string `json:"network"`
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	HostIf      string `json:"hostIf"`

	// The network's settings its network-level elements came from.
	Bridge       string   `json:"bridge,omitempty"` // "" in routed mode
	Subnets      []string `json:"subnets"`
	IPMasq       bool     `json:"ipMasq,omitempty"`
	Isolation    bool     `json:"isolation,omitempty"`
	ICC          bool     `json:"icc,omitempty"`
	Internal     bool     `json:"internal,omitempty"`
	NoMasquerade []string `json:"noMasquerade,omitempty"`

	IPs       []string   `json:"ips"`           // container addresses, CIDR
	MAC       string     `json:"mac,omitempty"` // "" when the MAC is not pinned
	Ports     []Port     `json:"ports,omitempty"`
	Bandwidth *Bandwidth `json:"bandwidth,omitempty"`
}

// Port is one published port.
type Port struct {
	Proto         string `json:"proto"`
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      uint16 `json:"hostPort"`
	ContainerPort uint16 `json:"containerPort"`
}

// Bandwidth is the shaping applied, in bits per second and bits.
type Bandwidth struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

const dirName = ".nswire-intents"

// Dir is where the intents of network live under an IPAM dataDir.
func Dir(dataDir, network string) string {
	return filepath.Join(dataDir, dirName, network)
}

// Networks lists the networks with an intent directory under dataDir.
func Networks(dataDir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(dataDir, dirName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, err
}

// ID is the attachment the intent is of.
func (in Intent) ID() ident.Attachment {
	return ident.Attachment{Network: in.Network, ContainerID: in.ContainerID, IfName: in.IfName}
}

func fileName(id ident.Attachment) string { return id.Hex(32) + ".json" }

// Save writes in's file, replacing an earlier one of the same attachment.
func Save(dir string, in Intent) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("intent: %w", err)
	}
	f, err := os.CreateTemp(dir, "tmp.")
	if err != nil {
		return fmt.Errorf("intent: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, fileName(in.ID())))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("intent of %s: %w", in.ID(), err)
	}
	return nil
}

// Remove deletes an attachment's file; a missing one is fine.
func Remove(dir string, id ident.Attachment) error {
	err := os.Remove(filepath.Join(dir, fileName(id)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("intent: %w", err)
	}
	return nil
}

// Load reads every intent of one network's directory. Files that do not
// parse (a foreign file) and temporary files (a Save in progress, or one
// killed) are skipped.
func Load(dir string) ([]Intent, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("intent: %w", err)
	}
	var out []Intent
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "tmp.") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // removed by a DEL meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("intent: %w", err)
		}
		var in Intent
		if json.Unmarshal(b, &in) == nil && in.Network != "" {
			out = append(out, in)
		}
	}
	return out, nil
}

// Prune removes the intents for which keep is false, and temporary files
// a killed Save left. GC calls it; GC is exclusive with the network's ADDs.
func Prune(dir string, keep func(ident.Attachment) bool) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("intent: %w", err)
	}
	var errs []error
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if !strings.HasPrefix(e.Name(), "tmp.") {
			var in Intent
			b, err := os.ReadFile(path)
			if err != nil || json.Unmarshal(b, &in) != nil || keep(in.ID()) {
				continue
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
