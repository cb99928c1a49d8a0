package main

import (
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	t.Setenv("NODE_NAME", "from-env")
	o, err := parseFlags([]string{"--cluster-cidr", "10.244.0.0/16, fd00:10:244::/56", "--routes=false", "--resync", "3s", "--restore=false"})
	if err != nil {
		t.Fatal(err)
	}
	if o.nodeName != "from-env" || o.confDir != "/etc/cni/net.d" || o.routes || o.restore || o.resync != 3*time.Second ||
		len(o.clusterCIDRs) != 2 || o.healthAddr != ":9467" || o.bridge != "nswire0" || o.ipamDataDir != "" {
		t.Errorf("options %+v", o)
	}
	o, err = parseFlags([]string{"--node-name", "n1", "--cluster-cidr", "10.244.0.0/16"})
	if err != nil || o.nodeName != "n1" || !o.routes || !o.restore { // both on by default
		t.Errorf("options %+v err %v", o, err)
	}
	for _, bad := range [][]string{
		{"--cluster-cidr", "10.244.0.0/16"},                                // no node name
		{"--node-name", "n"},                                               // no cluster CIDR
		{"--node-name", "n", "--cluster-cidr", "10.0.0.0/8,10.244.0.0/16"}, // two IPv4
		{"--node-name", "n", "--cluster-cidr", "10.244.0.0"},               // not a prefix
		{"--node-name", "n", "--cluster-cidr", "10.0.0.0/8", "extra"},
		{"--node-name", "n", "--cluster-cidr", "10.0.0.0/8", "--bridge", "a/b"},
		{"--node-name", "n", "--cluster-cidr", "10.0.0.0/8", "--ipam-data-dir", "relative/dir"},
	} {
		if bad[0] == "--cluster-cidr" {
			t.Setenv("NODE_NAME", "")
		}
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
		t.Setenv("NODE_NAME", "from-env")
	}
}
