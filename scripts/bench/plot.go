package main

import (
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var palette = map[string]color.RGBA{
	"nswire":         {31, 119, 180, 255},
	"nswire dual":    {44, 160, 44, 255},
	"reference":      {214, 39, 40, 255},
	"reference dual": {148, 103, 189, 255},
}

// writePlot draws every scale-phase ADD latency (dots), its running median
// (line) and the median of its CPU time (dashed) against the number of
// containers already attached, on a log latency axis, one colour per
// variant.
func writePlot(path string, r *report) error {
	p := plot.New()
	p.Title.Text = "ADD latency against the number of containers already attached (added one at a time)"
	p.X.Label.Text = "containers already attached to the variant's network"
	p.Y.Label.Text = "ADD latency, ms (log scale)"
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.TickerFunc(ticks125)
	p.X.Tick.Marker = plot.TickerFunc(integerTicks)
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	points := 0
	for _, e := range r.scaleEnvs {
		c := palette[e.v.key]
		dots, err := plotter.NewScatter(xys(e.res.scaleAdd))
		if err != nil {
			return err
		}
		dots.GlyphStyle = draw.GlyphStyle{Color: faded(c), Radius: vg.Points(1), Shape: draw.CircleGlyph{}}
		w := max(5, len(e.res.scaleAdd)/40)
		median, err := plotter.NewLine(xys(runningMedian(e.res.scaleAdd, w)))
		if err != nil {
			return err
		}
		median.Color, median.Width = c, vg.Points(1.5)
		cpu, err := plotter.NewLine(xys(runningMedian(e.res.scaleCPU, w)))
		if err != nil {
			return err
		}
		cpu.Color, cpu.Dashes = c, []vg.Length{vg.Points(4), vg.Points(4)}
		p.Add(dots, median, cpu)
		first, last := scaleEnds(e.res.scaleAdd, 20)
		p.Legend.Add(fmt.Sprintf("%s, %d containers: first 20 %s ms, last 20 %s ms (dashed: CPU)",
			e.v.key, len(e.res.scaleAdd), f2(first), f2(last)), median)
		points += len(e.res.scaleAdd)
	}
	if points == 0 {
		return fmt.Errorf("no scale data")
	}
	// Whole decades, with room above the data for the legend.
	p.Y.Min = math.Pow(10, math.Floor(math.Log10(p.Y.Min)))
	p.Y.Max = math.Pow(10, math.Ceil(math.Log10(p.Y.Max*3)))
	p.X.Label.Text += fmt.Sprintf("   (%s, %s)", r.started.Format("2006-01-02 15:04"), r.machine)
	return p.Save(12*vg.Inch, 7*vg.Inch, path)
}

// ticks125 labels 1, 2 and 5 times each power of ten between min and max.
func ticks125(min, max float64) []plot.Tick {
	var out []plot.Tick
	for k := math.Floor(math.Log10(min)); k <= math.Ceil(math.Log10(max)); k++ {
		for _, m := range []float64{1, 2, 5} {
			if v := m * math.Pow(10, k); v >= min && v <= max {
				out = append(out, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
			}
		}
	}
	return out
}

// integerTicks are gonum's default ticks with whole-number labels.
func integerTicks(min, max float64) []plot.Tick {
	out := plot.DefaultTicks{}.Ticks(min, max)
	for i := range out {
		if out[i].Label != "" {
			out[i].Label = strconv.FormatFloat(out[i].Value, 'f', 0, 64)
		}
	}
	return out
}

// xys are the positive samples of ds in ms against their index; a log
// axis cannot show zero (a sample that failed).
func xys(ds []time.Duration) plotter.XYs {
	var out plotter.XYs
	for i, d := range ds {
		if d > 0 {
			out = append(out, plotter.XY{X: float64(i), Y: ms(d)})
		}
	}
	return out
}

// faded is c mixed with 60% white: the dots stay behind the lines.
func faded(c color.RGBA) color.RGBA {
	mix := func(v uint8) uint8 { return uint8(255 - (255-int(v))*40/100) }
	return color.RGBA{mix(c.R), mix(c.G), mix(c.B), 255}
}

// runningMedian is the median of each sample's window of ±w positive
// samples, 0 where the window holds none.
func runningMedian(ds []time.Duration, w int) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i := range ds {
		var win []time.Duration
		for j := max(0, i-w); j <= min(len(ds)-1, i+w); j++ {
			if ds[j] > 0 {
				win = append(win, ds[j])
			}
		}
		if len(win) > 0 {
			slices.Sort(win)
			out[i] = win[len(win)/2]
		}
	}
	return out
}
