-- limitry.cli.chart: a timeseries drawn in the terminal, as horizontal bars (one line a bucket) or
-- as a sparkline (one line, buckets summed into as many columns as the terminal has).
local format = require "limitry.cli.format"

local M = {}

local floor, rep, concat = math.floor, string.rep, table.concat
local EIGHTHS = { "", "▏", "▎", "▍", "▌", "▋", "▊", "▉" }
local SPARKS = { "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█" }
local ASCII_SPARKS = { "_", ".", "-", "=", "+", "*", "#", "@" }

-- A bar of `cells` character cells (fractional: eighths in Unicode, rounded in ASCII).
local function bar(cells, unicode)
  if not unicode then return rep("#", floor(cells + 0.5)) end
  local whole = floor(cells)
  local eighth = floor((cells - whole) * 8 + 0.5)
  if eighth == 8 then whole, eighth = whole + 1, 0 end
  return rep("█", whole) .. EIGHTHS[eighth + 1]
end

-- points: list of { label, value }; show(value) -> text. width: the terminal's columns.
function M.bars(points, show, width, unicode)
  local label_w, value_w, peak = 0, 0, 0
  local shown = {}
  for i, p in ipairs(points) do
    shown[i] = show(p[2])
    label_w = math.max(label_w, format.width(p[1]))
    value_w = math.max(value_w, format.width(shown[i]))
    if p[2] > peak then peak = p[2] end
  end
  local room = math.max(10, width - label_w - value_w - 3)
  local out = {}
  for i, p in ipairs(points) do
    local cells = peak > 0 and p[2] / peak * room or 0
    local b = bar(cells, unicode)
    out[i] = p[1] .. rep(" ", label_w - format.width(p[1]) + 1) .. b .. rep(" ", room - format.width(b) + 1)
      .. rep(" ", value_w - format.width(shown[i])) .. shown[i]
  end
  return out
end

-- One line of at most `width` characters for the values (averaged into groups when there are
-- more values than columns), scaled from zero to the largest: an empty bucket is a space.
-- Returns the line and how many buckets each character stands for.
function M.sparkline(values, width, unicode)
  local per = math.max(1, math.ceil(#values / math.max(1, width)))
  local sums, counts = {}, {}
  for i, v in ipairs(values) do
    local g = floor((i - 1) / per) + 1
    sums[g] = (sums[g] or 0) + v
    counts[g] = (counts[g] or 0) + 1
  end
  local hi = 0
  for g, v in ipairs(sums) do
    sums[g] = v / counts[g]
    if sums[g] > hi then hi = sums[g] end
  end
  local chars = unicode and SPARKS or ASCII_SPARKS
  local out = {}
  for i, v in ipairs(sums) do
    if v <= 0 or hi <= 0 then
      out[i] = " "
    else
      out[i] = chars[math.max(1, math.min(#chars, math.ceil(v / hi * #chars)))]
    end
  end
  return concat(out), per
end

return M
