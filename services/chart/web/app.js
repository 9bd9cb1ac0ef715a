// The chart page: pick a symbol (ListInstruments) and an interval, see the
// candle history (GetCandles, older pages fetched with page tokens as the
// chart is scrolled left) and the live candle (SubscribeCandles, resumed
// with its cursor after a reconnect, reconnecting with backoff), all over
// gRPC-Web to the mesh that served the page.
//
// Prices and quantities stay decimal strings for everything shown as text
// (last price, legend); only the chart's coordinates are JS numbers.
//
// `window.tickmeshChart` is the page's state for tests and debugging: the
// selection, the newest candle as strings (with its revision and closed
// flag), when it last changed, how much history is loaded, the stream.

import {
  createChart,
  CandlestickSeries,
  HistogramSeries,
  CrosshairMode,
  TickMarkType,
} from './lightweight-charts.mjs';
import * as proto from './proto.js';
import { unary, serverStream, GrpcError, Code } from './grpc_web.js';

const MARKETFEED = '/tickmesh.marketfeed.v1.MarketFeedService';
const CANDLES = '/tickmesh.candles.v1.CandleQueryService';
/** The stored intervals: the ones SubscribeCandles follows. */
const INTERVALS = ['1m', '3m', '5m', '15m', '30m', '1h', '2h', '4h', '6h', '12h', '1d', '1w', '1M', '1Y'];
const DAY_OR_LONGER = new Set(['1d', '1w', '1M', '1Y']);

const params = new URLSearchParams(location.search);
/** Candles per GetCandles page (`?page_size=`; the server caps it at 1000). */
const PAGE_SIZE = Math.min(Math.max(parseInt(params.get('page_size'), 10) || 500, 1), 1000);
/** Fetch an older page when fewer bars than this are left of the view. */
const LOAD_MORE_MARGIN = 10;
const CALL_TIMEOUT_MS = 15000;
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 10000;
/** Stream errors that a retry cannot fix. */
const PERMANENT = new Set([
  Code.INVALID_ARGUMENT,
  Code.NOT_FOUND,
  Code.PERMISSION_DENIED,
  Code.UNIMPLEMENTED,
  Code.UNAUTHENTICATED,
]);

const UP = '#26a69a';
const DOWN = '#ef5350';
const UP_VOLUME = 'rgba(38, 166, 154, 0.45)';
const DOWN_VOLUME = 'rgba(239, 83, 80, 0.45)';

const state = {
  ready: false,
  symbol: '',
  interval: '',
  instruments: [],
  lastPrice: '',
  /** The newest candle: times as ISO strings, prices as the server's strings. */
  last: null,
  /** Date.now() when `last` last changed. */
  updatedAt: 0,
  candleCount: 0,
  pagesLoaded: 0,
  historyExhausted: false,
  pageSize: PAGE_SIZE,
  stream: {
    status: 'connecting',
    connects: 0,
    reconnects: 0,
    messages: 0,
    cursor: '',
    /** The first message of the latest connection: did it resume with a cursor, was it a snapshot. */
    lastConnect: null,
  },
  errors: [],
};
window.tickmeshChart = state;

const $ = (id) => document.getElementById(id);

const chart = createChart($('chart'), {
  autoSize: true,
  layout: {
    background: { color: '#131722' },
    textColor: '#d1d4dc',
    attributionLogo: true,
  },
  grid: {
    vertLines: { color: 'rgba(54, 58, 69, 0.5)' },
    horzLines: { color: 'rgba(54, 58, 69, 0.5)' },
  },
  crosshair: { mode: CrosshairMode.Normal },
  rightPriceScale: { borderColor: '#363a45', scaleMargins: { top: 0.08, bottom: 0.26 } },
  timeScale: { borderColor: '#363a45', barSpacing: 8, rightOffset: 4 },
});
const candleSeries = chart.addSeries(CandlestickSeries, {
  upColor: UP,
  downColor: DOWN,
  borderVisible: false,
  wickUpColor: UP,
  wickDownColor: DOWN,
});
const volumeSeries = chart.addSeries(HistogramSeries, {
  priceFormat: { type: 'volume' },
  priceScaleId: 'volume',
  lastValueVisible: false,
  priceLineVisible: false,
});
chart.priceScale('volume').applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });

/** One symbol and interval on screen: its candles, history paging and live stream. */
class View {
  constructor(instrument, interval) {
    this.instrument = instrument;
    this.interval = interval;
    /** Open time (epoch seconds) -> candle, the newest revision seen. */
    this.candles = new Map();
    /** Open times of the newest and the oldest bar drawn. */
    this.newest = null;
    this.firstDrawn = null;
    this.nextPageToken = '';
    this.loading = false;
    this.exhausted = false;
    this.cursor = '';
    this.closed = false;
    this.abort = null;
    this.wake = null;
    /** The crosshair is on a candle: the legend shows that one. */
    this.hovering = false;
  }

  start() {
    this.loadOlder();
    this.follow();
  }

  close() {
    this.closed = true;
    if (this.abort) this.abort.abort();
    if (this.wake) this.wake();
  }

  /** Merges candles of any source; keeps the higher revision of each. */
  merge(candles) {
    if (this.closed) return;
    let older = false;
    const changed = [];
    for (const c of candles) {
      if (c.interval !== this.interval || c.symbol !== this.instrument.symbol || !c.openTime) continue;
      const time = c.openTime.seconds;
      const known = this.candles.get(time);
      if (known && (known.revision > c.revision || (known.revision === c.revision && known.closed === c.closed))) {
        continue;
      }
      this.candles.set(time, c);
      if (this.newest !== null && time >= this.newest) changed.push(time);
      else older = true;
    }
    if (older) {
      // A page of history, the first candles, or a late correction of an
      // older candle: the chart can only append or replace its last bar.
      this.redraw();
    } else {
      changed.sort((a, b) => a - b);
      for (const time of changed) {
        const c = this.candles.get(time);
        candleSeries.update(bar(c));
        volumeSeries.update(volumeBar(c));
        this.newest = time;
      }
    }
    this.report();
  }

  /** Draws every candle again, keeping the bars in view where they were. */
  redraw() {
    const times = [...this.candles.keys()].sort((a, b) => a - b);
    const range = chart.timeScale().getVisibleLogicalRange();
    const previousFirst = this.firstDrawn;
    candleSeries.setData(times.map((t) => bar(this.candles.get(t))));
    volumeSeries.setData(times.map((t) => volumeBar(this.candles.get(t))));
    this.newest = times.length ? times[times.length - 1] : null;
    this.firstDrawn = times.length ? times[0] : null;
    if (range && previousFirst != null) {
      // Bars added on the left shift every logical index by their number.
      const added = times.findIndex((t) => t >= previousFirst);
      if (added > 0) chart.timeScale().setVisibleLogicalRange({ from: range.from + added, to: range.to + added });
    }
  }

  /** Fetches the next older page of history, when there is one. */
  async loadOlder() {
    if (this.loading || this.exhausted || this.closed) return;
    this.loading = true;
    let retry = false;
    try {
      const request = proto.encode(proto.GetCandlesRequest, {
        symbol: this.instrument.symbol,
        interval: this.interval,
        pageSize: PAGE_SIZE,
        pageToken: this.nextPageToken,
        order: proto.CandleOrder.NEWEST_FIRST,
      });
      const bytes = await unary(`${CANDLES}/GetCandles`, request, { timeoutMs: CALL_TIMEOUT_MS });
      if (this.closed) return;
      const page = proto.decode(proto.GetCandlesResponse, bytes);
      this.nextPageToken = page.nextPageToken;
      this.exhausted = !page.nextPageToken;
      state.pagesLoaded += 1;
      state.historyExhausted = this.exhausted;
      this.merge(page.candles);
      clearError('history');
    } catch (e) {
      if (this.closed) return;
      showError('history', `loading candles: ${e.message}`);
      retry = true;
    } finally {
      this.loading = false;
    }
    if (retry) setTimeout(() => this.loadMoreIfNeeded(), 2000);
    else this.loadMoreIfNeeded();
  }

  /** Loads older candles when the view reaches the left edge of what is loaded. */
  loadMoreIfNeeded() {
    if (this.closed || this.exhausted) return;
    const range = chart.timeScale().getVisibleLogicalRange();
    if (!range || range.from < LOAD_MORE_MARGIN) this.loadOlder();
  }

  /** Follows the live candle until closed, reconnecting with backoff and resuming with the cursor. */
  async follow() {
    let attempt = 0;
    while (!this.closed) {
      const controller = new AbortController();
      this.abort = controller;
      const resumed = this.cursor !== '';
      let first = true;
      let error;
      setStatus('connecting', resumed ? 'resuming' : 'connecting');
      try {
        const request = proto.encode(proto.SubscribeCandlesRequest, {
          symbol: this.instrument.symbol,
          intervals: [this.interval],
          cursor: this.cursor,
        });
        const messages = serverStream(`${CANDLES}/SubscribeCandles`, request, {
          signal: controller.signal,
          onOpen: () => {
            state.stream.connects += 1;
            attempt = 0;
            setStatus('live', 'live');
          },
        });
        for await (const bytes of messages) {
          const message = proto.decode(proto.SubscribeCandlesResponse, bytes);
          if (first) {
            state.stream.lastConnect = { resumed, snapshot: message.snapshot, at: Date.now() };
            first = false;
          }
          if (message.cursor) this.cursor = message.cursor;
          state.stream.messages += 1;
          state.stream.cursor = this.cursor;
          this.merge(message.candles);
        }
        error = new GrpcError(Code.UNAVAILABLE, 'the server ended the stream');
      } catch (e) {
        if (this.closed) return;
        error = e;
      }
      if (error instanceof GrpcError && PERMANENT.has(error.code)) {
        setStatus('failed', `stream failed: ${error.message}`);
        showError('stream', `live candles: ${error.message}`);
        return;
      }
      attempt += 1;
      state.stream.reconnects += 1;
      const delay = backoff(attempt);
      setStatus('reconnecting', `reconnecting in ${(delay / 1000).toFixed(1)} s (${error.message})`);
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, delay);
      });
    }
  }

  /** Publishes the newest candle to the header and `window.tickmeshChart`. */
  report() {
    state.candleCount = this.candles.size;
    $('history').textContent =
      `${plural(this.candles.size, 'candle')} loaded (${plural(state.pagesLoaded, 'page')} of up to ${PAGE_SIZE})` +
      (this.exhausted ? ', all history' : ', scroll left for more');
    const c = this.newest === null ? null : this.candles.get(this.newest);
    if (!c) return;
    const last = {
      openTime: isoTime(c.openTime),
      closeTime: isoTime(c.closeTime),
      open: c.open,
      high: c.high,
      low: c.low,
      close: c.close,
      volume: c.volume,
      tradeCount: c.tradeCount,
      revision: c.revision,
      closed: c.closed,
    };
    const before = state.last;
    if (before && before.openTime === last.openTime && before.revision === last.revision && before.closed === last.closed) {
      return;
    }
    state.last = last;
    state.lastPrice = c.close;
    state.updatedAt = Date.now();
    const price = $('last-price');
    price.textContent = c.close;
    price.className = `last-price ${Number(c.close) >= Number(c.open) ? 'up' : 'down'}`;
    const badge = $('candle-state');
    badge.textContent = `${c.closed ? 'closed' : 'open'} · rev ${c.revision}`;
    badge.className = `badge ${c.closed ? 'closed' : 'open'}`;
    if (!this.hovering) showLegend(c, this);
  }
}

function bar(c) {
  return { time: c.openTime.seconds, open: Number(c.open), high: Number(c.high), low: Number(c.low), close: Number(c.close) };
}

function volumeBar(c) {
  return { time: c.openTime.seconds, value: Number(c.volume), color: Number(c.close) >= Number(c.open) ? UP_VOLUME : DOWN_VOLUME };
}

function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function isoTime(t) {
  return t ? new Date(t.seconds * 1000 + Math.floor(t.nanos / 1e6)).toISOString() : '';
}

/** Exponential, capped, half of it random (so reconnecting pages spread out). */
function backoff(attempt) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(attempt - 1, 16));
  return base / 2 + Math.random() * (base / 2);
}

function setStatus(status, text) {
  state.stream.status = status;
  const el = $('stream-status');
  el.className = `status ${status}`;
  el.textContent = text;
}

const errors = new Map();
function showError(source, text) {
  errors.set(source, text);
  state.errors.push(`${new Date().toISOString()} ${source}: ${text}`);
  if (state.errors.length > 20) state.errors.shift();
  renderErrors();
}
function clearError(source) {
  if (errors.delete(source)) renderErrors();
}
function renderErrors() {
  const el = $('error');
  el.hidden = errors.size === 0;
  el.textContent = [...errors.values()].join(' · ');
}

/** Time labels in the instrument's time zone (the one its day candles follow). */
function timeFormatting(timeZone, interval) {
  let zone = timeZone || 'UTC';
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
  } catch {
    zone = 'UTC';
  }
  const partsOf = (seconds) => {
    const parts = {};
    const format = new Intl.DateTimeFormat('en-US', {
      timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
    for (const p of format.formatToParts(new Date(seconds * 1000))) parts[p.type] = p.value;
    return parts;
  };
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const dayOnly = DAY_OR_LONGER.has(interval);
  return {
    zone,
    full(seconds) {
      const p = partsOf(seconds);
      const date = `${p.year}-${p.month}-${p.day}`;
      return dayOnly ? date : `${date} ${p.hour}:${p.minute}`;
    },
    tick(seconds, type) {
      const p = partsOf(seconds);
      switch (type) {
        case TickMarkType.Year:
          return p.year;
        case TickMarkType.Month:
          return months[Number(p.month) - 1];
        case TickMarkType.DayOfMonth:
          return `${Number(p.day)} ${months[Number(p.month) - 1]}`;
        case TickMarkType.TimeWithSeconds:
          return `${p.hour}:${p.minute}:${p.second}`;
        default:
          return `${p.hour}:${p.minute}`;
      }
    },
  };
}

let formatting = timeFormatting('UTC', '1m');

function showLegend(c, view) {
  const legend = $('legend');
  legend.replaceChildren();
  const add = (label, value) => {
    legend.append(`${label} `);
    const b = document.createElement('b');
    b.textContent = value;
    legend.append(b, '  ');
  };
  legend.append(`${view.instrument.symbol} · ${view.interval} · ${formatting.full(c.openTime.seconds)} ${formatting.zone}   `);
  add('O', c.open);
  add('H', c.high);
  add('L', c.low);
  add('C', c.close);
  add('V', c.volume);
  add('trades', String(c.tradeCount));
  add(c.closed ? 'closed, rev' : 'open, rev', String(c.revision));
}

chart.subscribeCrosshairMove((param) => {
  if (!view) return;
  const c = param.time !== undefined ? view.candles.get(param.time) : null;
  view.hovering = Boolean(c);
  const shown = c || (view.newest !== null ? view.candles.get(view.newest) : null);
  if (shown) showLegend(shown, view);
});

$('to-now').addEventListener('click', () => chart.timeScale().scrollToRealTime());

chart.timeScale().subscribeVisibleLogicalRangeChange(() => {
  if (view) view.loadMoreIfNeeded();
});

let view = null;

function open(symbol, interval) {
  const instrument = state.instruments.find((i) => i.symbol === symbol);
  if (!instrument) return;
  if (view) view.close();
  state.symbol = symbol;
  state.interval = interval;
  state.last = null;
  state.lastPrice = '';
  state.candleCount = 0;
  state.pagesLoaded = 0;
  state.historyExhausted = false;
  state.stream.lastConnect = null;
  state.stream.cursor = '';
  errors.clear();
  renderErrors();
  $('last-price').textContent = '–';
  $('candle-state').textContent = '–';
  $('legend').textContent = `${symbol} · ${interval}`;
  const url = new URL(location.href);
  url.searchParams.set('symbol', symbol);
  url.searchParams.set('interval', interval);
  history.replaceState(null, '', url);

  formatting = timeFormatting(instrument.timeZone, interval);
  const scale = Math.min(instrument.priceScale, 12);
  candleSeries.applyOptions({ priceFormat: { type: 'price', precision: scale, minMove: 10 ** -scale } });
  chart.applyOptions({
    localization: { timeFormatter: (t) => `${formatting.full(t)} ${formatting.zone}` },
    timeScale: {
      timeVisible: !DAY_OR_LONGER.has(interval),
      secondsVisible: false,
      tickMarkFormatter: (t, type) => formatting.tick(t, type),
    },
  });
  candleSeries.setData([]);
  volumeSeries.setData([]);
  view = new View(instrument, interval);
  view.start();
}

async function listInstruments() {
  const instruments = [];
  let pageToken = '';
  do {
    const request = proto.encode(proto.ListInstrumentsRequest, { pageSize: 1000, pageToken });
    const bytes = await unary(`${MARKETFEED}/ListInstruments`, request, { timeoutMs: CALL_TIMEOUT_MS });
    const page = proto.decode(proto.ListInstrumentsResponse, bytes);
    instruments.push(...page.instruments);
    pageToken = page.nextPageToken;
  } while (pageToken && instruments.length < 10000);
  return instruments;
}

async function main() {
  for (const interval of INTERVALS) $('interval').append(new Option(interval, interval));
  let attempt = 0;
  for (;;) {
    try {
      state.instruments = await listInstruments();
      if (state.instruments.length) break;
      showError('instruments', 'no instruments registered yet (UpsertInstrument, or publish with auto-registration on)');
    } catch (e) {
      showError('instruments', `listing instruments: ${e.message}`);
    }
    attempt += 1;
    await new Promise((resolve) => setTimeout(resolve, backoff(attempt)));
  }
  clearError('instruments');
  for (const i of state.instruments) $('symbol').append(new Option(i.symbol, i.symbol));
  const symbol = state.instruments.some((i) => i.symbol === params.get('symbol'))
    ? params.get('symbol')
    : state.instruments[0].symbol;
  const interval = INTERVALS.includes(params.get('interval')) ? params.get('interval') : '1m';
  $('symbol').value = symbol;
  $('interval').value = interval;
  $('symbol').addEventListener('change', () => open($('symbol').value, $('interval').value));
  $('interval').addEventListener('change', () => open($('symbol').value, $('interval').value));
  open(symbol, interval);
  state.ready = true;
}

main();
