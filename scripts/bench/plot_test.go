package main

import (
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWritePlot draws synthetic scale data: the file is a PNG of the
// expected size.
func TestWritePlot(t *testing.T) {
	r := &report{started: time.Now(), machine: "test machine"}
	for _, v := range []struct {
		key  string
		base time.Duration
		n    int
	}{{"nswire", 20 * time.Millisecond, 300}, {"reference", 400 * time.Millisecond, 60}} {
		e := &env{v: variant{key: v.key}}
		for i := range v.n {
			d := v.base + time.Duration(rand.IntN(5000))*time.Microsecond + time.Duration(i)*10*time.Microsecond
			e.res.scaleAdd = append(e.res.scaleAdd, d)
			e.res.scaleCPU = append(e.res.scaleCPU, d/2)
		}
		e.res.scaleAdd[3] = -1 // a failed ADD is left out
		r.scaleEnvs = append(r.scaleEnvs, e)
	}
	path := filepath.Join(t.TempDir(), "bench.png")
	if err := writePlot(path, r); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 400 {
		t.Errorf("plot is %v", b)
	}
	if os.Getenv("NSWIRE_PLOT_OUT") != "" {
		data, _ := os.ReadFile(path)
		_ = os.WriteFile(os.Getenv("NSWIRE_PLOT_OUT"), data, 0o644)
	}
}
