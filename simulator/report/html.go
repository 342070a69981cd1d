package report

import (
	"bytes"
	"fmt"
	"html"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"
)

// WriteHTML writes a self-contained page (no scripts, no external files): a summary of every
// scenario, then for each its properties, calls over time (all and the busiest users,
// admitted and not) and bucket levels, as inline SVG.
func WriteHTML(w io.Writer, r *Report) error {
	var b bytes.Buffer
	if err := page.Execute(&b, view(r)); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

type pageView struct {
	*Report
	Sections []sectionView
}

type sectionView struct {
	*Scenario
	Anchor    string
	TopUsers  []UserRow
	MoreUsers int
	Calls     template.HTML
	PerUser   []template.HTML
	Levels    template.HTML
}

func view(r *Report) pageView {
	v := pageView{Report: r}
	for i, s := range r.Scenarios {
		top := Busiest(s.Users, textUsers)
		sec := sectionView{Scenario: s, Anchor: fmt.Sprintf("s%d", i), TopUsers: top, MoreUsers: len(s.Users) - len(top)}
		tl := s.Timeline
		if len(tl.Series) > 0 {
			sec.Calls = barChart(tl.Series[0], tl.Bin, tl.Span, s.Outages, 720, 160)
			for _, se := range tl.Series[1:] {
				sec.PerUser = append(sec.PerUser, barChart(se, tl.Bin, tl.Span, s.Outages, 350, 90))
			}
		}
		if len(s.Levels) > 0 {
			sec.Levels = levelChart(s.Levels, tl.Bin, tl.Span, 720, 180)
		}
		v.Sections = append(v.Sections, sec)
	}
	return v
}

const (
	colAdmitted = "#2e7d32"
	colRejected = "#c62828"
	colOutage   = "#ffe0b2"
)

var palette = []string{"#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e", "#37474f"}

// barChart draws admitted (below) and rejected (stacked above) calls per bin, over span,
// on a shaded band where Redis was down.
func barChart(s Series, bin, span time.Duration, outages []Outage, width, height int) template.HTML {
	const left, bottom, top = 44, 18, 18
	var peak int64 = 1
	for i := range s.Admitted {
		peak = max(peak, s.Admitted[i]+s.Rejected[i])
	}
	plotW, plotH := float64(width-left-4), float64(height-bottom-top)
	bw := plotW / float64(len(s.Admitted))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img"><title>%s: calls per %s</title>`,
		width, height, width, height, html.EscapeString(s.Label), HumanDuration(bin))
	fmt.Fprintf(&b, `<text x="%d" y="12" class="t">%s</text>`, left, html.EscapeString(s.Label))
	for _, o := range outages {
		if span <= 0 {
			break
		}
		x0 := float64(left) + plotW*float64(o.Start)/float64(span)
		x1 := float64(left) + plotW*float64(min(o.End, span))/float64(span)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%.1f" fill="%s"><title>Redis down +%s to +%s</title></rect>`,
			x0, top, max(x1-x0, 0.5), plotH, colOutage, html.EscapeString(o.From), html.EscapeString(o.To))
	}
	axes(&b, left, top, plotW, plotH, fmt.Sprint(peak), "0", span)
	for i := range s.Admitted {
		x := float64(left) + float64(i)*bw
		ha := float64(s.Admitted[i]) / float64(peak) * plotH
		hr := float64(s.Rejected[i]) / float64(peak) * plotH
		y0 := float64(top) + plotH
		start := bin * time.Duration(i)
		if s.Admitted[i] > 0 {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>+%s: %d admitted</title></rect>`,
				x, y0-ha, max(bw-1, 0.5), ha, colAdmitted, HumanDuration(start), s.Admitted[i])
		}
		if s.Rejected[i] > 0 {
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>+%s: %d not admitted</title></rect>`,
				x, y0-ha-hr, max(bw-1, 0.5), hr, colRejected, HumanDuration(start), s.Rejected[i])
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built here, every label escaped
}

// levelChart draws each bucket's lowest level per bin, in tokens with their fraction, as a
// share of its capacity (buckets of different sizes on one scale), under a dashed line at
// full.
func levelChart(ls []Levels, bin, span time.Duration, width, height int) template.HTML {
	const left, bottom, top = 44, 18, 18
	plotW, plotH := float64(width-left-4), float64(height-bottom-top)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img"><title>bucket levels</title>`, width, height, width, height)
	axes(&b, left, top, plotW, plotH, "full", "empty", span)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%.1f" y2="%d" class="full"/>`, left, top, float64(left)+plotW, top)
	for k, l := range ls {
		col := palette[k%len(palette)]
		bw := plotW / float64(len(l.Remaining))
		var pts []string
		flush := func() {
			if len(pts) > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, col, strings.Join(pts, " "))
				pts = nil
			}
		}
		for i, rem := range l.Remaining {
			if rem < 0 {
				flush() // a gap: no decision touched the bucket in this bin
				continue
			}
			x := float64(left) + (float64(i)+0.5)*bw
			y := float64(top) + plotH - float64(rem)/float64(max(l.MaxTokens, 1))*plotH
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.6" fill="%s"><title>%s +%s: %s of %d tokens left</title></circle>`,
				x, y, col, html.EscapeString(l.Bucket), HumanDuration(bin*time.Duration(i)), strconv.FormatFloat(rem, 'f', -1, 64), l.MaxTokens)
		}
		flush()
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built here, every label escaped
}

// axes draws the y axis with its top label just above the top of the plot (the line that
// value stands for) and its bottom label on the x axis, and the x axis from 0 to span.
func axes(b *strings.Builder, left, top int, w, h float64, yTop, yBottom string, span time.Duration) {
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%.1f" class="ax"/>`, left, top, left, float64(top)+h)
	fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" class="ax"/>`, left, float64(top)+h, float64(left)+w, float64(top)+h)
	fmt.Fprintf(b, `<text x="%d" y="%d" class="l" text-anchor="end">%s</text>`, left-4, top-2, html.EscapeString(yTop))
	fmt.Fprintf(b, `<text x="%d" y="%.1f" class="l" text-anchor="end">%s</text>`, left-4, float64(top)+h, html.EscapeString(yBottom))
	fmt.Fprintf(b, `<text x="%d" y="%.1f" class="l">0</text>`, left, float64(top)+h+13)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" class="l" text-anchor="end">%s</text>`, float64(left)+w, float64(top)+h+13, HumanDuration(span))
}

func color(i int) string { return palette[i%len(palette)] }

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"verdict": verdict,
	"user":    userLabel,
	"color":   color,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Tollgate simulator report</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2.2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0}td,th{padding:2px 10px;text-align:right}th{border-bottom:1px solid #999}
td:first-child,th:first-child{text-align:left}
.PASS{color:#2e7d32;font-weight:bold}.FAIL{color:#c62828;font-weight:bold}
.meta{color:#555}.v{font-family:monospace;white-space:pre-wrap;margin:.2em 0 .2em 2em;color:#6d1b1b}
.small{display:inline-block;margin:0 8px 8px 0}
svg .ax{stroke:#888;stroke-width:1}svg .full{stroke:#bbb;stroke-width:1;stroke-dasharray:4 3}svg .l{font-size:10px;fill:#555}svg .t{font-size:11px;fill:#222}
.key span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
</style></head><body>
<h1>Tollgate simulator report</h1>
<p>{{len .Scenarios}} scenarios: <span class="PASS">{{.Passed}} passed</span>, <span class="FAIL">{{.Failed}} failed</span>.</p>
<table><tr><th>scenario</th><th>verdict</th><th>calls</th><th>admitted</th><th>rejected</th><th>shadow-rejected</th></tr>
{{range .Sections}}<tr><td><a href="#{{.Anchor}}">{{.Name}}</a></td><td class="{{verdict .OK}}">{{verdict .OK}}</td><td>{{.Totals.Requests}}</td><td>{{.Totals.Admitted}}</td><td>{{.Totals.Rejected}}</td><td>{{.Totals.ShadowRejected}}</td></tr>
{{end}}</table>
{{range .Sections}}
<h2 id="{{.Anchor}}"><span class="{{verdict .OK}}">{{verdict .OK}}</span> {{.Name}}</h2>
{{with .Description}}<p>{{.}}</p>{{end}}
<p class="meta">{{.File}} · server {{.Server}} · {{.Mode}} mode · {{.Replicas}} replica(s) · {{.Duration}} from {{.Epoch.Format "2006-01-02T15:04:05Z07:00"}} · seed {{.Seed}} · {{.Decided}}</p>
{{with .Trace}}<p>Trace <code>{{.File}}</code>: {{.Replayed}} calls replayed ({{.Skipped}} records skipped). Under this config {{.NowRejected}} calls that got through would be rejected, and {{.NowAdmitted}} that were refused would be admitted.</p>{{with .Warning}}<p class="FAIL">Warning: {{.}}.</p>{{end}}{{end}}
<h3>Properties</h3>
{{range .Checks}}<div><span class="{{verdict .OK}}">{{verdict .OK}}</span> <b>{{.Name}}</b>: {{.Summary}}</div>
{{range .Violations}}<div class="v">{{.}}</div>{{end}}{{if gt .Count (len .Violations)}}<div class="v">… {{.Count}} in all</div>{{end}}
{{end}}
<h3>Calls over time</h3>
<p class="key"><span style="background:#2e7d32"></span>admitted<span style="background:#c62828"></span>not admitted (rejected, shadow-rejected, refused){{if .Outages}}<span style="background:#ffe0b2"></span>Redis down{{end}}</p>
{{with .OutageLine}}<p>{{.}}.</p>{{end}}
{{.Calls}}
<div>{{range .PerUser}}<div class="small">{{.}}</div>{{end}}</div>
{{if .Levels}}<h3>Bucket levels</h3>
<p class="meta">Lowest level after the decisions in each interval, in tokens with their fraction, as a share of the bucket's capacity (dashed: full); gaps where no call touched the bucket.</p>
<p class="key">{{range $i, $l := .Scenario.Levels}}<span style="background:{{color $i}}"></span>{{$l.Bucket}} ({{$l.MaxTokens}}) {{end}}</p>
{{.Levels}}{{end}}
<h3>Users</h3>
{{$tiered := .Tiers}}<table><tr><th>user</th>{{if $tiered}}<th>tier</th>{{end}}<th>calls</th><th>admitted</th><th>rejected</th><th>shadow-rejected</th></tr>
{{range .TopUsers}}<tr><td>{{user .User}}</td>{{if $tiered}}<td>{{.Tier}}</td>{{end}}<td>{{.Requests}}</td><td>{{.Admitted}}</td><td>{{.Rejected}}</td><td>{{.ShadowRejected}}</td></tr>
{{end}}</table>{{if gt .MoreUsers 0}}<p class="meta">… and {{.MoreUsers}} more users (all in report.json).</p>{{end}}
{{if .Tiers}}<h3>Tiers</h3>
<table><tr><th>tier</th><th>users</th><th>calls</th><th>admitted</th><th>rejected</th><th>shadow-rejected</th></tr>
{{range .Tiers}}<tr><td>{{.Tier}}</td><td>{{.Users}}</td><td>{{.Requests}}</td><td>{{.Admitted}}</td><td>{{.Rejected}}</td><td>{{.ShadowRejected}}</td></tr>
{{end}}</table>{{if gt .MoreTiers 0}}<p class="meta">… and {{.MoreTiers}} more tiers (all in report.json).</p>{{end}}
<p class="meta">"-" is calls in no tier (the default per-user buckets).</p>{{end}}
<h3>Tools, prompts and resources</h3>
<table><tr><th>call</th><th>calls</th><th>admitted</th><th>rejected</th><th>shadow-rejected</th></tr>
{{range .Names}}<tr><td>{{.Method}} {{.Name}}</td><td>{{.Requests}}</td><td>{{.Admitted}}</td><td>{{.Rejected}}</td><td>{{.ShadowRejected}}</td></tr>
{{end}}</table>
{{end}}
</body></html>
`))
