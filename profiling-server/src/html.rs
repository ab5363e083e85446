//! Where the page for people is rendered: `GET /api/profiling/`. One self-contained
//! document (inline CSS and script, no external assets): the ranking as a table sortable
//! by any column, memory and CPU figures, links to the JSON endpoints. The server renders
//! the first view (so it reads without JavaScript); a script refreshes it every 5 seconds.

use std::fmt::Write;

use profiling_core::Ranking;

use crate::reports::{CpuReport, MemoryReport};

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / 1_048_576.0)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.digits$}"))
}

const COLUMNS: [(&str, &str); 10] = [
    ("rank", "#"),
    ("function", "function"),
    ("calls", "calls"),
    ("self_wall_ns", "self ms"),
    ("total_wall_ns", "total ms"),
    ("cpu_ns", "CPU ms"),
    ("alloc_bytes", "alloc MiB"),
    ("p99_ns", "p99 ms"),
    ("impact_score", "impact"),
    ("classification", "class"),
];

/// Links to the flamegraph and pprof routes, and the instrumented flamegraph embedded
/// (an `<object>`, so inferno's search and zoom keep working).
#[cfg(feature = "profiling-full")]
fn flamegraph_section(base: &str) -> String {
    let links: String = [
        ("flamegraph?source=instrumented&weight=wall", "self wall"),
        ("flamegraph?source=instrumented&weight=cpu", "CPU"),
        ("flamegraph?source=instrumented&weight=off_cpu", "off-CPU"),
        ("flamegraph?source=instrumented&weight=alloc_bytes", "allocated bytes"),
        ("folded?weight=wall", "folded text"),
        ("flamegraph?source=cpu&seconds=5", "sampled CPU, 5 s"),
        ("pprof?seconds=10", "pprof CPU profile, 10 s"),
        ("pprof/heap", "pprof heap profile"),
    ]
    .iter()
    .map(|(p, label)| format!("<a href=\"{base}/{}\">{label}</a> ", esc(p)))
    .collect();
    format!(
        "<h2>Flamegraphs</h2><p>{links}</p>\
         <object data=\"{base}/flamegraph?source=instrumented&amp;weight=wall\" type=\"image/svg+xml\" \
         style=\"width:100%;min-height:400px\">instrumented flamegraph</object>"
    )
}

#[cfg(not(feature = "profiling-full"))]
fn flamegraph_section(_base: &str) -> String {
    "<p>Flamegraphs and pprof profiles: build with the <code>profiling-full</code> feature.</p>".to_owned()
}

/// Renders the page.
pub(crate) fn page(ranking: &Ranking, memory: &MemoryReport, cpu: &CpuReport, base: &str) -> String {
    let mut rows = String::new();
    for b in &ranking.bottlenecks {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class=fn title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
            b.rank,
            esc(&b.recommendations.join("\n")),
            esc(&b.stats.name),
            b.stats.calls,
            ms(b.stats.self_wall_ns),
            ms(b.stats.total_wall_ns),
            ms(b.stats.cpu_self_ns),
            mib(b.stats.alloc_self.alloc_bytes),
            ms(b.stats.p99_ns),
            b.impact_score,
            esc(&b.classification.to_string()),
        );
    }
    if ranking.bottlenecks.is_empty() {
        rows.push_str("<tr><td colspan=10>No annotated function has been called in this window yet.</td></tr>");
    }
    let headers: String = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (key, label))| format!("<th data-col={i} data-key={key}>{label}</th>"))
        .collect();
    let links: String = ["bottlenecks", "functions", "memory", "cpu", "allocations", "snapshots"]
        .iter()
        .map(|p| format!("<a href=\"{base}/{p}\">{p}</a> "))
        .chain(std::iter::once("<a href=\"/metrics\">/metrics</a>".to_owned()))
        .collect();
    let flamegraphs = flamegraph_section(base);
    format!(
        r#"<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Profiling</title>
<meta name=viewport content="width=device-width, initial-scale=1">
<noscript><meta http-equiv=refresh content=10></noscript>
<style>
body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}}
h1{{font-size:1.3em}} .cards{{display:flex;gap:1em;flex-wrap:wrap;margin-bottom:1em}}
.card{{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;min-width:12em}}
.card b{{display:block;font-size:1.2em}} .warn{{background:#fff3cd}} .alert{{background:#f8d7da}}
table{{border-collapse:collapse;width:100%}} th,td{{border-bottom:1px solid #eee;padding:4px 8px;text-align:right}}
th{{cursor:pointer;background:#f6f6f6;user-select:none}} td.fn,th[data-key=function]{{text-align:left;font-family:monospace}}
th.asc::after{{content:" ▲"}} th.desc::after{{content:" ▼"}} #status{{color:#666}}
</style></head><body>
<h1>Profiling — bottlenecks by {sort}</h1>
<div class=cards>
<div class="card{memclass}" id=mem>RSS<b id=rss>{rss} MiB</b>heap <span id=heap>{heap}</span> MiB · growth <span id=growth>{growth}</span> MiB/h</div>
<div class=card id=cpu>CPU<b id=cpupct>{cpupct} %</b>load <span id=load>{load}</span> · threads <span id=threads>{threads}</span></div>
<div class=card>Window<b id=window>{window:.1} s</b>{nfun} functions · epoch {epoch}</div>
</div>
<p>JSON: {links} <span id=status></span></p>
<table id=t><thead><tr>{headers}</tr></thead><tbody>{rows}</tbody></table>
<p>Hover a function for its recommendations. Click a column to sort. Refreshes every 5 s.</p>
{flamegraphs}
<script>
(function(){{
const base={base_js};
let sortCol=null,asc=false;
const fmtMs=n=>(n/1e6).toFixed(3), fmtMiB=b=>(b/1048576).toFixed(1);
const esc=s=>String(s).replace(/[&<>"']/g,c=>({{'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}}[c]));
function cell(td){{const v=td.textContent.trim();const n=Number(v);return v!==''&&!isNaN(n)?n:v;}}
function sortTable(){{
  if(sortCol===null)return;
  const tb=document.querySelector('#t tbody');const rows=[...tb.rows];
  rows.sort((a,b)=>{{const x=cell(a.cells[sortCol]),y=cell(b.cells[sortCol]);const r=x<y?-1:x>y?1:0;return asc?r:-r;}});
  rows.forEach(r=>tb.appendChild(r));
  document.querySelectorAll('th').forEach(th=>th.className=(+th.dataset.col===sortCol)?(asc?'asc':'desc'):'');
}}
document.querySelectorAll('th').forEach(th=>th.addEventListener('click',()=>{{const c=+th.dataset.col;asc=(sortCol===c)?!asc:false;sortCol=c;sortTable();}}));
async function refresh(){{
  try{{
    const [r,m,c]=await Promise.all(['bottlenecks?limit=100','memory','cpu'].map(p=>fetch(base+'/'+p).then(x=>{{if(!x.ok)throw new Error(p+': '+x.status);return x.json();}})));
    document.querySelector('#t tbody').innerHTML=r.bottlenecks.map(b=>'<tr><td>'+b.rank+'</td><td class=fn title="'+esc(b.recommendations.join('\n'))+'">'+esc(b.function)+'</td><td>'+b.calls+'</td><td>'+fmtMs(b.self_wall_ns)+'</td><td>'+fmtMs(b.total_wall_ns)+'</td><td>'+fmtMs(b.cpu_ns)+'</td><td>'+fmtMiB(b.alloc_bytes)+'</td><td>'+fmtMs(b.p99_ns)+'</td><td>'+b.impact_score.toFixed(3)+'</td><td>'+esc(b.classification)+'</td></tr>').join('')||'<tr><td colspan=10>No annotated function has been called in this window yet.</td></tr>';
    sortTable();
    document.getElementById('rss').textContent=fmtMiB(m.rss_bytes)+' MiB';
    document.getElementById('heap').textContent=m.heap_bytes==null?'n/a':fmtMiB(m.heap_bytes);
    document.getElementById('growth').textContent=m.growth_rate_mb_per_hour==null?'n/a':m.growth_rate_mb_per_hour.toFixed(1);
    document.getElementById('mem').className='card'+(m.alert?' alert':m.warning?' warn':'');
    document.getElementById('cpupct').textContent=(c.cpu_percent==null?'n/a':c.cpu_percent.toFixed(1))+' %';
    document.getElementById('load').textContent=c.load_average?c.load_average.one.toFixed(2):'n/a';
    document.getElementById('threads').textContent=c.threads;
    document.getElementById('window').textContent=(r.window.duration_ns/1e9).toFixed(1)+' s';
    document.getElementById('status').textContent='updated '+new Date().toLocaleTimeString();
  }}catch(e){{document.getElementById('status').textContent='refresh failed: '+e.message;}}
}}
setInterval(refresh,5000);
}})();
</script></body></html>
"#,
        sort = esc(ranking.sort.as_str()),
        memclass = if memory.alert {
            " alert"
        } else if memory.warning {
            " warn"
        } else {
            ""
        },
        rss = mib(memory.rss_bytes),
        heap = memory.heap_bytes.map_or_else(|| "n/a".to_owned(), mib),
        growth = opt(memory.growth_rate_mb_per_hour, 1),
        cpupct = opt(cpu.cpu_percent, 1),
        load = cpu
            .load_average
            .map_or_else(|| "n/a".to_owned(), |l| format!("{:.2}", l.one)),
        threads = cpu.threads,
        window = ranking.window.duration_ns as f64 / 1e9,
        nfun = ranking.window.functions,
        epoch = ranking.window.epoch,
        base_js = serde_json::to_string(base).unwrap_or_else(|_| "\"\"".to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[cfg(feature = "profiling-full")]
    #[test]
    fn links_and_embeds_flamegraphs_with_the_feature() {
        let s = flamegraph_section("/api/profiling");
        assert!(s.contains("<object data=\"/api/profiling/flamegraph?source=instrumented&amp;weight=wall\""));
        for route in ["weight=off_cpu", "pprof?seconds=10", "pprof/heap", "folded?weight=wall"] {
            assert!(s.contains(route), "missing {route} in {s}");
        }
    }

    #[cfg(not(feature = "profiling-full"))]
    #[test]
    fn names_the_feature_without_it() {
        let s = flamegraph_section("/api/profiling");
        assert!(s.contains("profiling-full") && !s.contains("<object"));
    }
}
