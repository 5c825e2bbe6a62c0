-- wrk script: each request carries the next Cookie value from the file $BENCH_COOKIES (one per line).
local cookies = {}
for line in io.lines(os.getenv("BENCH_COOKIES")) do
  cookies[#cookies + 1] = line
end
local i = 0
request = function()
  i = i % #cookies + 1
  return wrk.format(nil, nil, { ["Cookie"] = cookies[i] })
end
