package main

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/nswire/nswire/pkg/restore"
)

func TestParseFlags(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil || o.confDir != "/etc/cni/net.d" || o.watch || o.level != slog.LevelInfo {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	o, err = parseFlags([]string{"--watch", "--cni-conf-dir", "/x", "--log-level", "debug"})
	if err != nil || o.confDir != "/x" || !o.watch || o.level != slog.LevelDebug {
		t.Errorf("flags: %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"--log-level", "loud"}, {"extra"}, {"--nope"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPrintReport(t *testing.T) {
	var b bytes.Buffer
	ok := printReport(&b, restore.Report{Live: 2, Firewall: []string{"n/c/eth0: why"}, Records: []string{"n"}}, nil)
	if !ok || !strings.Contains(b.String(), "restored firewall: n/c/eth0: why\nrestored record: n\n2 live attachments, 0 gone, 2 repairs, 0 errors") {
		t.Errorf("ok %v, output:\n%s", ok, b.String())
	}
	b.Reset()
	if printReport(&b, restore.Report{Errors: []error{errors.New("port held")}}, nil) || !strings.Contains(b.String(), "error: port held") {
		t.Errorf("errors not reported:\n%s", b.String())
	}
}
