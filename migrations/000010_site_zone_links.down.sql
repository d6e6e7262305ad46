-- Which sites were named CET, MET, EET or WET is not kept: the zones they now name have
-- the same rules, so nothing is undone.
SELECT 1;
