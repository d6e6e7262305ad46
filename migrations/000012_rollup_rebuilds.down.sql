DROP TABLE rollup_rebuilds;
