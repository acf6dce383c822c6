import t from 'tap';
import { hooksLoadedScenarios } from '../scenarios/hooks-loaded';
import { STACKS } from '../stacks';

hooksLoadedScenarios(t, STACKS['modular']);
