package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"slices"
	"strconv"
	"time"
)

var palette = map[string]color.RGBA{
	"nswire":         {31, 119, 180, 255},
	"nswire dual":    {44, 160, 44, 255},
	"reference":      {214, 39, 40, 255},
	"reference dual": {148, 103, 189, 255},
}

// writePlot draws every scale-phase ADD latency (dots) and its running
// median (line) against the number of containers already attached, on a
// log latency axis, one colour per variant.
func writePlot(path string, r *report) error {
	// The legend goes under the plot, where it cannot hide data.
	const W, left, right, top, ph = 1200, 100, 30, 60, 540
	bottom := 100 + (len(r.scaleEnvs)+1)*24 + 10
	H := top + ph + bottom
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	white, black, grid := color.RGBA{255, 255, 255, 255}, color.RGBA{0, 0, 0, 255}, color.RGBA{225, 225, 225, 255}
	fill(img, img.Bounds(), white)

	count := 0
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, e := range r.scaleEnvs {
		count = max(count, len(e.res.scaleAdd))
		for _, d := range slices.Concat(e.res.scaleAdd, e.res.scaleCPU) {
			if d > 0 {
				lo, hi = math.Min(lo, ms(d)), math.Max(hi, ms(d))
			}
		}
	}
	if count == 0 || math.IsInf(lo, 0) {
		return fmt.Errorf("no scale data")
	}
	yLo, yHi := math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
	if yHi/yLo < 10 {
		yHi *= 10
	}
	pw := W - left - right
	X := func(i float64) int { return left + int(math.Round(i/float64(max(count-1, 1))*float64(pw))) }
	Y := func(v float64) int {
		f := (math.Log10(v) - math.Log10(yLo)) / (math.Log10(yHi) - math.Log10(yLo))
		return top + ph - int(math.Round(f*float64(ph)))
	}

	// Grid and tick labels: 1, 2, 5 × 10^k ms; x in round steps.
	for k := math.Log10(yLo); k < math.Log10(yHi)+0.5; k++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, k)
			if v < yLo*0.999 || v > yHi*1.001 {
				continue
			}
			y := Y(v)
			hline(img, left, left+pw, y, grid)
			label := strconv.FormatFloat(v, 'f', -1, 64)
			drawText(img, left-10-textWidth(label), y-textHeight/2, label, black, false)
			hline(img, left-6, left, y, black)
		}
	}
	step := niceStep(float64(count) / 10)
	for i := 0.0; i <= float64(count-1)+0.5; i += step {
		x := X(i)
		vline(img, x, top, top+ph, grid)
		vline(img, x, top+ph, top+ph+6, black)
		label := strconv.FormatFloat(i, 'f', -1, 64)
		drawText(img, x-textWidth(label)/2, top+ph+12, label, black, false)
	}
	rect(img, left, top, left+pw, top+ph, black)

	// Data: dots first, medians on top.
	for _, e := range r.scaleEnvs {
		c := palette[e.v.key]
		light := color.RGBA{uint8(255 - (255-int(c.R))*60/100), uint8(255 - (255-int(c.G))*60/100), uint8(255 - (255-int(c.B))*60/100), 255}
		for i, d := range e.res.scaleAdd {
			if d > 0 {
				dot(img, X(float64(i)), Y(ms(d)), 1, light)
			}
		}
	}
	for _, e := range r.scaleEnvs {
		c := palette[e.v.key]
		w := max(5, count/40)
		polyline(img, runningMedian(e.res.scaleAdd, w), X, Y, c, false)
		polyline(img, runningMedian(e.res.scaleCPU, w), X, Y, c, true)
	}

	// Titles and legend.
	title := "ADD latency against the number of containers already attached (added one at a time)"
	drawText(img, left+(pw-textWidth(title))/2, 20, title, black, false)
	xl := "containers already attached to the variant's network"
	drawText(img, left+(pw-textWidth(xl))/2, top+ph+40, xl, black, false)
	yl := "ADD latency, ms (log scale)"
	drawText(img, 20, top+ph/2+textWidth(yl)/2, yl, black, true)
	lx, ly := left+16, top+ph+74
	boxW := 0
	var lines []string
	for _, e := range r.scaleEnvs {
		f, l := scaleEnds(e.res.scaleAdd, 20)
		lines = append(lines, fmt.Sprintf("%s, %d containers: first 20 %s ms, last 20 %s ms", e.v.key, len(e.res.scaleAdd), f2(f), f2(l)))
		boxW = max(boxW, textWidth(lines[len(lines)-1]))
	}
	lines = append(lines, "dots: each ADD; line: running median; dashed: its CPU time")
	boxW = max(boxW, textWidth(lines[len(lines)-1]))
	fill(img, image.Rect(lx-8, ly-8, lx+36+boxW+8, ly+len(lines)*24), white)
	rect(img, lx-8, ly-8, lx+36+boxW+8, ly+len(lines)*24, black)
	for i, e := range r.scaleEnvs {
		c := palette[e.v.key]
		y := ly + i*24
		for t := -1; t <= 1; t++ {
			hline(img, lx, lx+26, y+textHeight/2+t, c)
		}
		drawText(img, lx+36, y, lines[i], black, false)
	}
	drawText(img, lx+36, ly+len(r.scaleEnvs)*24, lines[len(lines)-1], color.RGBA{90, 90, 90, 255}, false)
	foot := fmt.Sprintf("%s  %s", r.started.Format("2006-01-02 15:04"), r.machine)
	if textWidth(foot) > W-20 {
		foot = string([]rune(foot)[:(W-20)/(6*textScale)])
	}
	drawText(img, 10, H-textHeight-4, foot, color.RGBA{120, 120, 120, 255}, false)

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// polyline joins the non-NaN points of ys; dashed draws every other 8 px.
func polyline(img *image.RGBA, ys []float64, X func(float64) int, Y func(float64) int, c color.RGBA, dashed bool) {
	px, py := -1, -1
	for i, v := range ys {
		if math.IsNaN(v) || v <= 0 {
			continue
		}
		x, y := X(float64(i)), Y(v)
		if px >= 0 && (!dashed || (x/8)%2 == 0) {
			line(img, px, py, x, y, c)
		}
		px, py = x, y
	}
}

// runningMedian is the median of the successful latencies (ms) in a window
// of 2w+1 around each index.
func runningMedian(ds []time.Duration, w int) []float64 {
	out := make([]float64, len(ds))
	for i := range ds {
		var win []time.Duration
		for j := max(0, i-w); j <= min(len(ds)-1, i+w); j++ {
			if ds[j] > 0 {
				win = append(win, ds[j])
			}
		}
		if len(win) == 0 {
			out[i] = math.NaN()
			continue
		}
		slices.Sort(win)
		out[i] = ms(win[len(win)/2])
	}
	return out
}

func niceStep(raw float64) float64 {
	if raw <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

func rect(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	hline(img, x0, x1, y0, c)
	hline(img, x0, x1, y1, c)
	vline(img, x0, y0, y1, c)
	vline(img, x1, y0, y1, c)
}

func dot(img *image.RGBA, x, y, r int, c color.RGBA) {
	for dy := -r; dy <= r; dy++ {
		for dx := -r; dx <= r; dx++ {
			img.SetRGBA(x+dx, y+dy, c)
		}
	}
}

// line draws a 2-pixel-thick segment (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	err := dx + dy
	for {
		dot(img, x0, y0, 1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * err
		if e2 >= dy {
			err += dy
			x0 += sx
		}
		if e2 <= dx {
			err += dx
			y0 += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func sign(x int) int {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}
