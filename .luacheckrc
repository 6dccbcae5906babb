std = "max+busted"
globals = { "ngx", "jit", "TEST", "DEAD" }
max_line_length = 180
exclude_files = { ".test-tmp", "build", ".limitry-local" }
